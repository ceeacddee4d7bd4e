package org.tether.corpus;

import java.util.Arrays;
import org.tether.corpus.common.OutputKeys;

/**
 * The three logback output formats this application is run with, and where each writes what (a
 * dotted name is a nested path in Spring's ECS, a top-level key elsewhere).
 */
public enum Variant {
  /** logstash-logback-encoder's LogstashEncoder with its defaults; MDC entries are top-level. */
  LOGSTASH_LOGBACK_ENCODER(
      "logstash-logback-encoder",
      new OutputKeys("message", "level", "@timestamp", "traceId", "spanId", null)),
  /** Spring Boot structured logging, logging.structured.format.console=ecs. */
  SPRING_ECS(
      "spring-ecs",
      new OutputKeys("message", "log.level", "@timestamp", "traceId", "spanId", "service.name")),
  /** Spring Boot structured logging, logging.structured.format.console=logstash. */
  SPRING_LOGSTASH(
      "spring-logstash",
      new OutputKeys("message", "level", "@timestamp", "traceId", "spanId", null));

  private final String propertyValue;
  private final OutputKeys keys;

  Variant(String propertyValue, OutputKeys keys) {
    this.propertyValue = propertyValue;
    this.keys = keys;
  }

  public static Variant named(String propertyValue) {
    return Arrays.stream(values())
        .filter(variant -> variant.propertyValue.equals(propertyValue))
        .findFirst()
        .orElseThrow(() -> new IllegalArgumentException("unknown corpus.variant " + propertyValue));
  }

  public OutputKeys keys() {
    return keys;
  }

  /** Whether the format writes the service name (spring.application.name) on every line. */
  public boolean writesServiceName() {
    return keys.service() != null;
  }
}
