package main

import (
	"context"
	"os"

	"github.com/sirupsen/logrus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// logrusLibrary: logrus with &logrus.JSONFormatter{} defaults ("time" RFC 3339 with whole
// seconds and the local offset, "level", "msg", "error" from WithError). logrus's
// OpenTelemetry integration (contrib bridges/otellogrus) is a logs bridge that writes
// no JSON, so ids are added with WithFields, as logrus users do.
var logrusLibrary = Library{
	Name: "go-logrus",
	Keys: LibraryKeys{Message: "msg", Level: "level", Time: "time", TraceID: "trace_id", SpanID: "span_id"},
	Run:  runLogrus,
}

func runLogrus(out *os.File, rec *Recorder, tp *sdktrace.TracerProvider) error {
	logger := logrus.New()
	logger.SetOutput(out)
	logger.SetFormatter(&logrus.JSONFormatter{})
	logger.SetLevel(logrus.TraceLevel)

	rec.Log("trace", msgTrace, nil, func() { logger.WithField("key", "cart:42").Trace(msgTrace) })
	rec.Log("debug", msgDebug, nil, func() { logger.Debug(msgDebug) })
	rec.Log("info", msgFields, nil, func() {
		logger.WithFields(logrus.Fields{"user_id": 42, "plan": "pro", "roles": []string{"admin", "billing"}}).Info(msgFields)
	})
	rec.Log("warn", msgWarn, nil, func() { logger.WithField("disk_used_ratio", 0.91).Warn(msgWarn) })
	rec.Log("error", msgError, nil, func() { logger.WithError(errDeclined).Error(msgError) })

	_, span := StartSpan(context.Background(), tp, "POST /checkout")
	sc := span.SpanContext()
	spanEntry := logger.WithFields(logrus.Fields{"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()})
	rec.Log("info", msgInSpan, &sc, func() { spanEntry.WithField("amount_cents", 1999).Info(msgInSpan) })
	span.End()

	rec.Log("info", msgAfterSpan, nil, func() { logger.WithField("status", 200).Info(msgAfterSpan) })
	rec.Log("info", msgUnicode, nil, func() { logger.Info(msgUnicode) })
	return nil
}
