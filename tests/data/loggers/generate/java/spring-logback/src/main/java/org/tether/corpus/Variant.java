package org.tether.corpus;

import java.util.Arrays;
import org.tether.corpus.common.OutputKeys;

/** The three logback output formats this application is run with, and where each writes what. */
public enum Variant {
  /** logstash-logback-encoder's LogstashEncoder with its defaults; MDC entries are top-level. */
  LOGSTASH_LOGBACK_ENCODER(
      "logstash-logback-encoder",
      new OutputKeys("message", "level", "@timestamp", "traceId", "spanId", null),
      false),
  /** Spring Boot structured logging, logging.structured.format.console=ecs. */
  SPRING_ECS(
      "spring-ecs",
      new OutputKeys("message", "log.level", "@timestamp", "traceId", "spanId", "service.name"),
      true),
  /** Spring Boot structured logging, logging.structured.format.console=logstash. */
  SPRING_LOGSTASH(
      "spring-logstash",
      new OutputKeys("message", "level", "@timestamp", "traceId", "spanId", null),
      false);

  private final String propertyValue;
  private final OutputKeys keys;
  private final boolean writesServiceName;

  Variant(String propertyValue, OutputKeys keys, boolean writesServiceName) {
    this.propertyValue = propertyValue;
    this.keys = keys;
    this.writesServiceName = writesServiceName;
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

  public boolean writesServiceName() {
    return writesServiceName;
  }
}
