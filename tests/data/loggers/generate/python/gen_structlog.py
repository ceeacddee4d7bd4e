"""python-structlog: JSONRenderer with add_log_level, TimeStamper(fmt="iso"), format_exc_info.

Trace ids come from a processor shaped like structlog's documented OpenTelemetry recipe: it reads
the current span and writes {"span": {"span_id", "trace_id", "parent_span_id"}}, or "span": null
outside a recording span. structlog has no service name of its own, so lines carry none.
"""

from __future__ import annotations

from typing import Any

import structlog
from corpus import Keys, LineContext, library_output_path, make_tracer_provider, write_corpus
from opentelemetry import trace
from structlog.typing import EventDict, WrappedLogger

LIBRARY = "python-structlog"


def add_open_telemetry_span(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    span = trace.get_current_span()
    if not span.is_recording():
        event_dict["span"] = None
        return event_dict
    context = span.get_span_context()
    parent = getattr(span, "parent", None)
    event_dict["span"] = {
        "span_id": format(context.span_id, "016x"),
        "trace_id": format(context.trace_id, "032x"),
        "parent_span_id": None if parent is None else format(parent.span_id, "016x"),
    }
    return event_dict


class StructlogLogger:
    def __init__(self) -> None:
        self.log = structlog.get_logger()

    def emit(self, line: LineContext) -> None:
        method = {"warn": "warning"}.get(line.level, line.level)
        fields: dict[str, Any] = dict(line.fields)
        if line.error is not None:
            fields["exc_info"] = True
        getattr(self.log, method)(line.message, **fields)

    def keys(self, line: LineContext) -> Keys:
        in_span = line.trace_id is not None
        return Keys(
            message="event",
            level="level",
            time="timestamp",
            trace_id="span.trace_id" if in_span else None,
            span_id="span.span_id" if in_span else None,
            service=None,
        )

    def service(self, line: LineContext) -> str | None:
        return None

    def rendered_message(self, line: LineContext) -> str:
        return line.message


def main() -> None:
    make_tracer_provider()
    with library_output_path(LIBRARY).open("w", encoding="utf-8") as output:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                add_open_telemetry_span,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=output),
            cache_logger_on_first_use=False,
        )
        write_corpus(LIBRARY, StructlogLogger())


if __name__ == "__main__":
    main()
