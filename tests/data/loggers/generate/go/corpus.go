// Package main runs the Go logging libraries and writes their JSON lines,
// plus one "expected" object per line built from what was passed in.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Keys names where in a line each expected value was written (dotted paths).
type Keys struct {
	Message string  `json:"message"`
	Level   *string `json:"level"`
	Time    string  `json:"time"`
	TraceID *string `json:"trace_id"`
	SpanID  *string `json:"span_id"`
	Service *string `json:"service"`
}

// Expected is one line of <library>.expected.jsonl (field order matters only for readability).
type Expected struct {
	Message   string  `json:"message"`
	Level     string  `json:"level"`
	TraceID   *string `json:"trace_id"`
	SpanID    *string `json:"span_id"`
	Service   *string `json:"service"`
	TimeMinNs int64   `json:"time_min_ns"`
	TimeMaxNs int64   `json:"time_max_ns"`
	Keys      Keys    `json:"keys"`
}

// LibraryKeys are the keys one library writes; ids are named only on lines that carry them.
type LibraryKeys struct {
	Message, Level, Time, TraceID, SpanID string
}

// Recorder wraps each log call with clock reads and remembers what the call was given.
type Recorder struct {
	keys     LibraryKeys
	expected []Expected
}

func strPtr(s string) *string { return &s }

// Log runs emit (one log call) and records the expected fields of the line it writes.
// span is nil for a line written outside any span.
func (r *Recorder) Log(level, message string, span *trace.SpanContext, emit func()) {
	before := time.Now()
	emit()
	after := time.Now()
	e := Expected{
		Message:   message,
		Level:     level,
		TimeMinNs: before.Truncate(time.Second).UnixNano(),
		TimeMaxNs: after.Add(time.Millisecond).UnixNano(),
		Keys: Keys{
			Message: r.keys.Message,
			Level:   strPtr(r.keys.Level),
			Time:    r.keys.Time,
		},
	}
	if span != nil {
		e.TraceID = strPtr(span.TraceID().String())
		e.SpanID = strPtr(span.SpanID().String())
		e.Keys.TraceID = strPtr(r.keys.TraceID)
		e.Keys.SpanID = strPtr(r.keys.SpanID)
	}
	r.expected = append(r.expected, e)
}

// StartSpan creates a real, sampled span with the OpenTelemetry SDK.
func StartSpan(ctx context.Context, tp *sdktrace.TracerProvider, name string) (context.Context, trace.Span) {
	return tp.Tracer("tether-logger-corpus").Start(ctx, name)
}

// Library is one corpus file: it logs through the real library into out.
type Library struct {
	Name string
	Keys LibraryKeys
	Run  func(out *os.File, rec *Recorder, tp *sdktrace.TracerProvider) error
}

// writeLibrary runs one library and writes <name>.jsonl and <name>.expected.jsonl into dir.
func writeLibrary(dir string, lib Library, tp *sdktrace.TracerProvider) error {
	linesPath := filepath.Join(dir, lib.Name+".jsonl")
	out, err := os.Create(linesPath)
	if err != nil {
		return err
	}
	rec := &Recorder{keys: lib.Keys}
	runErr := lib.Run(out, rec, tp)
	if err := out.Close(); err != nil {
		return err
	}
	if runErr != nil {
		return fmt.Errorf("%s: %w", lib.Name, runErr)
	}
	if err := checkOneLinePerCall(linesPath, len(rec.expected)); err != nil {
		return fmt.Errorf("%s: %w", lib.Name, err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, e := range rec.expected {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, lib.Name+".expected.jsonl"), buf.Bytes(), 0o644)
}

// checkOneLinePerCall guards the pairing of lines with expected objects: every call must
// have written exactly one line of valid JSON.
func checkOneLinePerCall(path string, calls int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	lines := 0
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if !json.Valid(scanner.Bytes()) {
			return fmt.Errorf("line %d is not JSON: %s", lines+1, scanner.Text())
		}
		lines++
	}
	if err := scanner.Err(); err != nil {
		return err
	}
	if lines != calls {
		return fmt.Errorf("%d lines for %d log calls", lines, calls)
	}
	return nil
}
