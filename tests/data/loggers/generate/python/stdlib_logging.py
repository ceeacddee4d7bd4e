"""The standard-library side shared by python-json-logger and ecs-logging generators.

Both are `logging.Formatter`s, so both get their trace ids the same way: OpenTelemetry's
LoggingInstrumentor (opentelemetry-instrumentation-logging) puts otelTraceID, otelSpanID,
otelTraceSampled and otelServiceName on every LogRecord, and the formatter prints record attributes.
"""

from __future__ import annotations

import logging
from typing import IO

from corpus import LineContext
from opentelemetry.instrumentation.logging import LoggingInstrumentor

STDLIB_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}


def instrument_logging() -> None:
    """Injects the ids into records without touching handlers (no basicConfig, no OTLP handler)."""
    LoggingInstrumentor().instrument(inject_trace_context=True, enable_log_auto_instrumentation=False)


def stream_logger(name: str, formatter: logging.Formatter, output: IO[str]) -> logging.Logger:
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def emit_stdlib(logger: logging.Logger, line: LineContext) -> None:
    """One call the way stdlib users write it: extra= for fields, exc_info for the exception."""
    exc_info = (type(line.error), line.error, line.error.__traceback__) if line.error is not None else None
    logger.log(STDLIB_LEVELS[line.level], line.message, extra=dict(line.fields), exc_info=exc_info)
