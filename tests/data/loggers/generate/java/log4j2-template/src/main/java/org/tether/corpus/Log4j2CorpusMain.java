package org.tether.corpus;

import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.context.Scope;
import io.opentelemetry.sdk.trace.SdkTracerProvider;
import io.opentelemetry.sdk.trace.export.SimpleSpanProcessor;
import io.opentelemetry.sdk.trace.export.SpanExporter;
import java.io.IOException;
import java.nio.file.Path;
import org.apache.logging.log4j.CloseableThreadContext;
import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.tether.corpus.common.ExpectedFile;
import org.tether.corpus.common.LineRecorder;
import org.tether.corpus.common.OutputKeys;
import org.tether.corpus.common.PaymentFailures;

/**
 * Logs the corpus lines through the Log4j API to a JsonTemplateLayout (EcsLayout.json) console
 * appender and writes the expected file named by the one argument.
 *
 * <p>The span is created by the OpenTelemetry SDK; OpenTelemetry's log4j context-data provider (on
 * the classpath, found by ServiceLoader) adds trace_id/span_id/trace_flags to each event's context
 * data, which the template's flattened "labels" (mdc) resolver writes as top-level keys.
 */
public final class Log4j2CorpusMain {
  private static final Logger LOG = LogManager.getLogger("checkout.payments");

  /**
   * EcsLayout.json writes flat keys with dots in their names ("log.level" is one key), not nested
   * objects; the context data is flattened to the top level.
   */
  private static final OutputKeys KEYS =
      new OutputKeys("message", "log.level", "@timestamp", "trace_id", "span_id", "service.name");

  private static final String SERVICE_NAME = "checkout";

  private Log4j2CorpusMain() {}

  public static void main(String[] args) throws IOException {
    if (args.length != 1) {
      throw new IllegalArgumentException("usage: Log4j2CorpusMain EXPECTED_JSONL");
    }
    // Without a span processor the SDK hands out non-recording spans with invalid ids; an
    // application has an exporter, this corpus needs none (the composite of no exporters).
    SdkTracerProvider tracerProvider =
        SdkTracerProvider.builder()
            .addSpanProcessor(SimpleSpanProcessor.create(SpanExporter.composite()))
            .build();
    try {
      LineRecorder recorder = new LineRecorder(KEYS, SERVICE_NAME);
      logAll(recorder, tracerProvider.get("checkout"));
      ExpectedFile.write(Path.of(args[0]), recorder.lines());
    } finally {
      tracerProvider.close();
    }
  }

  private static void logAll(LineRecorder recorder, Tracer tracer) {
    recorder.log("info", "user 42 logged in", () -> LOG.info("user 42 logged in"));
    recorder.log("debug", "cache miss for cart:42", () -> LOG.debug("cache miss for cart:42"));
    recorder.log(
        "warn",
        "payment provider slow, retry 2 of 3",
        () -> LOG.warn("payment provider slow, retry 2 of 3"));
    // Log4j's structured fields for a template layout: the ThreadContext map (the "labels"
    // resolver is stringified, so 1001 is written as "1001").
    recorder.log(
        "info",
        "order placed",
        () -> {
          try (CloseableThreadContext.Instance fields =
              CloseableThreadContext.put("order_id", "1001")
                  .put("amount", "12.50")
                  .put("currency", "EUR")) {
            LOG.info("order placed");
          }
        });
    String nonAscii = "Zahlung für Kunde \"Müller\" bestätigt: 12,50 € ✓ 東京";
    recorder.log("info", nonAscii, () -> LOG.info(nonAscii));

    Span span = tracer.spanBuilder("charge card").startSpan();
    try (Scope scope = span.makeCurrent()) {
      recorder.log(
          "info", "charging card for order 1001", () -> LOG.info("charging card for order 1001"));
      Exception failure = PaymentFailures.declinedPayment();
      recorder.log(
          "error",
          "payment failed for order 1001",
          () -> LOG.error("payment failed for order 1001", failure));
    } finally {
      span.end();
    }
    recorder.log("warn", "order 1001 left unpaid", () -> LOG.warn("order 1001 left unpaid"));
    recorder.log(
        "fatal",
        "no payment gateway reachable, shutting down",
        () -> LOG.fatal("no payment gateway reachable, shutting down"));
  }
}
