package main

import (
	"context"
	"log/slog"
	"os"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// slogLibrary: log/slog's JSONHandler with its defaults ("time" RFC 3339 with nanoseconds
// and the local offset, "level", "msg"), the level lowered to Debug. The OpenTelemetry
// slog integration (contrib bridges/otelslog) is a logs bridge that writes no JSON, so
// ids come from a small handler that reads the span from the context of *Context calls,
// the pattern slog users write.
var slogLibrary = Library{
	Name: "go-slog",
	Keys: LibraryKeys{Message: "msg", Level: "level", Time: "time", TraceID: "trace_id", SpanID: "span_id"},
	Run:  runSlog,
}

// spanContextHandler adds trace_id and span_id to records logged with a context that
// holds a valid span.
type spanContextHandler struct{ slog.Handler }

func (h spanContextHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h spanContextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return spanContextHandler{h.Handler.WithAttrs(attrs)}
}

func (h spanContextHandler) WithGroup(name string) slog.Handler {
	return spanContextHandler{h.Handler.WithGroup(name)}
}

func runSlog(out *os.File, rec *Recorder, tp *sdktrace.TracerProvider) error {
	logger := slog.New(spanContextHandler{slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})})
	ctx := context.Background()

	rec.Log("debug", msgDebug, nil, func() { logger.DebugContext(ctx, msgDebug) })
	rec.Log("info", msgFields, nil, func() {
		logger.InfoContext(ctx, msgFields, "user_id", 42, "plan", "pro",
			slog.Group("request", slog.String("method", "POST"), slog.String("path", "/login")))
	})
	rec.Log("warn", msgWarn, nil, func() { logger.WarnContext(ctx, msgWarn, "disk_used_ratio", 0.91) })
	rec.Log("error", msgError, nil, func() { logger.ErrorContext(ctx, msgError, "error", errDeclined) })
	// A level between the named ones: slog prints it as "INFO+2"; it is still info.
	rec.Log("info", "retrying payment", nil, func() {
		logger.Log(ctx, slog.LevelInfo+2, "retrying payment", "attempt", 2)
	})

	spanCtx, span := StartSpan(ctx, tp, "POST /checkout")
	sc := span.SpanContext()
	rec.Log("info", msgInSpan, &sc, func() { logger.InfoContext(spanCtx, msgInSpan, "amount_cents", 1999) })
	span.End()

	rec.Log("info", msgAfterSpan, nil, func() { logger.InfoContext(ctx, msgAfterSpan, "status", 200) })
	rec.Log("info", msgUnicode, nil, func() { logger.InfoContext(ctx, msgUnicode) })
	return nil
}
