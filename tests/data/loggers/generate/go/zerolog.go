package main

import (
	"context"
	"os"

	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// zerologLibrary: zerolog.New(w).With().Timestamp() with zerolog's defaults: "time" in
// RFC 3339 with whole seconds and the local offset, "level", "message", "error".
// zerolog has no OpenTelemetry integration that writes ids into its JSON, so they are
// added as fields with a child logger, as zerolog users do.
var zerologLibrary = Library{
	Name: "go-zerolog",
	Keys: LibraryKeys{Message: "message", Level: "level", Time: "time", TraceID: "trace_id", SpanID: "span_id"},
	Run: func(out *os.File, rec *Recorder, tp *sdktrace.TracerProvider) error {
		return runZerolog(out, rec, tp, zerolog.TimeFieldFormat)
	},
}

// zerologUnixLibrary: the common second default, epoch milliseconds as a JSON integer
// (zerolog.TimeFieldFormat = zerolog.TimeFormatUnixMs).
var zerologUnixLibrary = Library{
	Name: "go-zerolog-unix",
	Keys: LibraryKeys{Message: "message", Level: "level", Time: "time", TraceID: "trace_id", SpanID: "span_id"},
	Run: func(out *os.File, rec *Recorder, tp *sdktrace.TracerProvider) error {
		return runZerolog(out, rec, tp, zerolog.TimeFormatUnixMs)
	},
}

func runZerolog(out *os.File, rec *Recorder, tp *sdktrace.TracerProvider, timeFormat string) error {
	// TimeFieldFormat is a package global in zerolog: set it for this run, restore it after.
	previous := zerolog.TimeFieldFormat
	zerolog.TimeFieldFormat = timeFormat
	defer func() { zerolog.TimeFieldFormat = previous }()

	logger := zerolog.New(out).Level(zerolog.TraceLevel).With().Timestamp().Logger()

	rec.Log("trace", msgTrace, nil, func() { logger.Trace().Str("key", "cart:42").Msg(msgTrace) })
	rec.Log("debug", msgDebug, nil, func() { logger.Debug().Msg(msgDebug) })
	rec.Log("info", msgFields, nil, func() {
		logger.Info().Int("user_id", 42).Str("plan", "pro").Strs("roles", []string{"admin", "billing"}).Msg(msgFields)
	})
	rec.Log("warn", msgWarn, nil, func() { logger.Warn().Float64("disk_used_ratio", 0.91).Msg(msgWarn) })
	rec.Log("error", msgError, nil, func() { logger.Error().Err(errDeclined).Msg(msgError) })

	_, span := StartSpan(context.Background(), tp, "POST /checkout")
	sc := span.SpanContext()
	spanLogger := logger.With().Str("trace_id", sc.TraceID().String()).Str("span_id", sc.SpanID().String()).Logger()
	rec.Log("info", msgInSpan, &sc, func() { spanLogger.Info().Int("amount_cents", 1999).Msg(msgInSpan) })
	span.End()

	rec.Log("info", msgAfterSpan, nil, func() { logger.Info().Int("status", 200).Msg(msgAfterSpan) })
	rec.Log("info", msgUnicode, nil, func() { logger.Info().Msg(msgUnicode) })
	return nil
}
