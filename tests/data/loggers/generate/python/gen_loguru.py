"""python-loguru: a sink added with serialize=True (loguru's own JSON shape: {"text", "record"}).

loguru has no OpenTelemetry integration, and LoggingInstrumentor only touches stdlib LogRecords, so
the ids are added the way loguru users do it: a patcher copies the current span's ids into
record["extra"] (trace_id, span_id), which serialize=True prints under record.extra. No service name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corpus import Keys, LineContext, library_output_path, make_tracer_provider, write_corpus
from loguru import logger
from opentelemetry import trace

if TYPE_CHECKING:
    from loguru import Record

LIBRARY = "python-loguru"
LOGURU_METHODS = {"debug": "debug", "info": "info", "warn": "warning", "error": "error", "fatal": "critical"}


def add_otel_ids(record: Record) -> None:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        record["extra"]["trace_id"] = format(context.trace_id, "032x")
        record["extra"]["span_id"] = format(context.span_id, "016x")


class LoguruLogger:
    def __init__(self) -> None:
        self.log = logger.patch(add_otel_ids)

    def emit(self, line: LineContext) -> None:
        bound = self.log.bind(**line.fields).opt(exception=line.error)
        getattr(bound, LOGURU_METHODS[line.level])(line.message)

    def keys(self, line: LineContext) -> Keys:
        in_span = line.trace_id is not None
        return Keys(
            message="record.message",
            level="record.level.name",
            time="record.time.repr",
            trace_id="record.extra.trace_id" if in_span else None,
            span_id="record.extra.span_id" if in_span else None,
            service=None,
        )

    def service(self, line: LineContext) -> str | None:
        return None

    def rendered_message(self, line: LineContext) -> str:
        return line.message


def main() -> None:
    make_tracer_provider()
    with library_output_path(LIBRARY).open("w", encoding="utf-8") as output:
        logger.remove()
        logger.add(output, serialize=True, level="DEBUG")
        write_corpus(LIBRARY, LoguruLogger())
        logger.complete()


if __name__ == "__main__":
    main()
