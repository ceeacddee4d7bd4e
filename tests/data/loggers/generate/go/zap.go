package main

import (
	"context"
	"os"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
)

// zapLibrary: zap.NewProductionConfig() as NewProduction builds it (JSON, epoch-seconds
// float "ts", caller, stacktrace from Error up), with the level lowered to Debug and the
// output sent to the corpus file. zap's OpenTelemetry integration (contrib bridges/otelzap)
// is a logs bridge that writes no JSON, so ids are added as fields, as zap users do.
var zapLibrary = Library{
	Name: "go-zap",
	Keys: LibraryKeys{Message: "msg", Level: "level", Time: "ts", TraceID: "trace_id", SpanID: "span_id"},
	Run:  runZap,
}

func runZap(out *os.File, rec *Recorder, tp *sdktrace.TracerProvider) error {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.DebugLevel)
	cfg.OutputPaths = []string{out.Name()}
	logger, err := cfg.Build()
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()

	rec.Log("debug", msgDebug, nil, func() { logger.Debug(msgDebug) })
	rec.Log("info", msgFields, nil, func() {
		logger.Info(msgFields, zap.Int("user_id", 42), zap.String("plan", "pro"), zap.Strings("roles", []string{"admin", "billing"}))
	})
	rec.Log("warn", msgWarn, nil, func() { logger.Warn(msgWarn, zap.Float64("disk_used_ratio", 0.91)) })
	rec.Log("error", msgError, nil, func() { logger.Error(msgError, zap.Error(errDeclined)) })

	_, span := StartSpan(context.Background(), tp, "POST /checkout")
	sc := span.SpanContext()
	spanLogger := logger.With(zap.String("trace_id", sc.TraceID().String()), zap.String("span_id", sc.SpanID().String()))
	rec.Log("info", msgInSpan, &sc, func() { spanLogger.Info(msgInSpan, zap.Int("amount_cents", 1999)) })
	span.End()

	rec.Log("info", msgAfterSpan, nil, func() { logger.Info(msgAfterSpan, zap.Int("status", 200)) })
	rec.Log("info", msgUnicode, nil, func() { logger.Info(msgUnicode) })
	return nil
}
