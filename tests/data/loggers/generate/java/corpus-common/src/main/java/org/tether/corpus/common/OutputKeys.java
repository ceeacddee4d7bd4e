package org.tether.corpus.common;

/**
 * Where one output format writes each value: a dotted path for nested objects, the literal key
 * otherwise (README says which of the two each dotted name is).
 */
public record OutputKeys(
    String message, String level, String time, String traceId, String spanId, String service) {}
