package org.tether.corpus;

import io.micrometer.tracing.Span;
import io.micrometer.tracing.Tracer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.stereotype.Component;
import org.tether.corpus.common.LineRecorder;
import org.tether.corpus.common.PaymentFailures;

/**
 * The corpus lines, logged the way application code does: SLF4J calls, and a span opened through
 * Micrometer's Tracer so Micrometer (not this code) puts traceId/spanId into the MDC.
 */
@Component
public class CorpusLines {
  private static final Logger LOG = LoggerFactory.getLogger("checkout.payments");

  private final Tracer tracer;

  public CorpusLines(Tracer tracer) {
    this.tracer = tracer;
  }

  public void logAll(LineRecorder recorder) {
    recorder.log("info", "user 42 logged in", () -> LOG.info("user 42 logged in"));
    recorder.log("debug", "cache miss for cart:42", () -> LOG.debug("cache miss for cart:42"));
    recorder.log(
        "warn",
        "payment provider slow, retry 2 of 3",
        () -> LOG.warn("payment provider slow, retry 2 of 3"));
    // SLF4J 2 key-value pairs: all three formats write them as top-level fields.
    recorder.log(
        "info",
        "order placed",
        () ->
            LOG.atInfo()
                .setMessage("order placed")
                .addKeyValue("order_id", 1001)
                .addKeyValue("amount", "12.50")
                .addKeyValue("currency", "EUR")
                .log());
    String nonAscii = "Zahlung für Kunde \"Müller\" bestätigt: 12,50 € ✓ 東京";
    recorder.log("info", nonAscii, () -> LOG.info(nonAscii));

    Span span = tracer.nextSpan().name("charge card").start();
    try (Tracer.SpanInScope scope = tracer.withSpan(span)) {
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
  }
}
