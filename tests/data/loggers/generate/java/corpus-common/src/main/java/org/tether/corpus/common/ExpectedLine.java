package org.tether.corpus.common;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * One line of a corpus .expected.jsonl file: what the program passed to the logger, the active
 * span context's ids, and the clock around the call (format: generate/java/README.md).
 */
public record ExpectedLine(
    String message,
    String level,
    String traceId,
    String spanId,
    String service,
    long timeMinNs,
    long timeMaxNs,
    Map<String, String> keys) {

  /** The JSON object in the field order of the corpus format (nulls kept: they are meaningful). */
  public Map<String, Object> toJsonObject() {
    Map<String, Object> json = new LinkedHashMap<>();
    json.put("message", message);
    json.put("level", level);
    json.put("trace_id", traceId);
    json.put("span_id", spanId);
    json.put("service", service);
    json.put("time_min_ns", timeMinNs);
    json.put("time_max_ns", timeMaxNs);
    json.put("keys", keys);
    return json;
  }
}
