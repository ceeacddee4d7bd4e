package org.tether.corpus.common;

import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanContext;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Wraps each log call: reads the clock before and after it and the OpenTelemetry span context that
 * is current while it runs, and keeps what was passed in as the expected line.
 */
public final class LineRecorder {
  private static final long NANOS_PER_SECOND = 1_000_000_000L;
  private static final long ONE_MILLISECOND_NS = 1_000_000L;

  private final OutputKeys outputKeys;
  private final String serviceName;
  private final List<ExpectedLine> lines = new ArrayList<>();

  /**
   * @param outputKeys where the variant writes each value
   * @param serviceName the service name the variant writes on every line, or null if it writes none
   */
  public LineRecorder(OutputKeys outputKeys, String serviceName) {
    this.outputKeys = outputKeys;
    this.serviceName = serviceName;
  }

  /** Runs one log call that logs {@code message} at canonical {@code level}. */
  public void log(String level, String message, Runnable logCall) {
    long beforeNs = nowNs();
    SpanContext spanContext = Span.current().getSpanContext();
    logCall.run();
    long afterNs = nowNs();
    String traceId = spanContext.isValid() ? spanContext.getTraceId() : null;
    String spanId = spanContext.isValid() ? spanContext.getSpanId() : null;
    Map<String, String> keys = new LinkedHashMap<>();
    keys.put("message", outputKeys.message());
    keys.put("level", outputKeys.level());
    keys.put("time", outputKeys.time());
    // A key the line does not carry is null: only lines logged inside a span get ids.
    keys.put("trace_id", traceId == null ? null : outputKeys.traceId());
    keys.put("span_id", spanId == null ? null : outputKeys.spanId());
    keys.put("service", serviceName == null ? null : outputKeys.service());
    lines.add(
        new ExpectedLine(
            message,
            level,
            traceId,
            spanId,
            serviceName,
            beforeNs - Math.floorMod(beforeNs, NANOS_PER_SECOND),
            afterNs + ONE_MILLISECOND_NS,
            keys));
  }

  public List<ExpectedLine> lines() {
    return List.copyOf(lines);
  }

  private static long nowNs() {
    Instant now = Instant.now();
    return now.getEpochSecond() * NANOS_PER_SECOND + now.getNano();
  }
}
