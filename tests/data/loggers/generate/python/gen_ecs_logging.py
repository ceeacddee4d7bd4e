"""python-ecs-logging: ecs_logging.StdlibFormatter on a stdlib logger.

ecs-logging has no OpenTelemetry support: it fills trace.id / span.id / service.name only from the
`elasticapm_*` record attributes that the Elastic APM agent sets. With OpenTelemetry, the stdlib
way is LoggingInstrumentor (see stdlib_logging.py), whose record attributes StdlibFormatter prints
as top-level extras: otelTraceID, otelSpanID ("0" outside a span), otelTraceSampled, otelServiceName.
The service name is also given the documented ECS way, StdlibFormatter(extra={"service.name": ...}),
so lines carry it at service.name (and at otelServiceName).
"""

from __future__ import annotations

import logging

import ecs_logging
from corpus import SERVICE_NAME, Keys, LineContext, library_output_path, make_tracer_provider, write_corpus
from stdlib_logging import emit_stdlib, instrument_logging, stream_logger

LIBRARY = "python-ecs-logging"


class EcsLogger:
    def __init__(self, logger_name: str) -> None:
        self.logger_name = logger_name

    def emit(self, line: LineContext) -> None:
        emit_stdlib(logging.getLogger(self.logger_name), line)

    def keys(self, line: LineContext) -> Keys:
        return Keys(
            message="message",
            level="log.level",
            time="@timestamp",
            trace_id="otelTraceID",
            span_id="otelSpanID",
            service="service.name",
        )

    def service(self, line: LineContext) -> str | None:
        return SERVICE_NAME

    def rendered_message(self, line: LineContext) -> str:
        return line.message


def main() -> None:
    make_tracer_provider()
    instrument_logging()
    with library_output_path(LIBRARY).open("w", encoding="utf-8") as output:
        formatter = ecs_logging.StdlibFormatter(extra={"service.name": SERVICE_NAME})
        stream_logger("checkout.orders", formatter, output)
        write_corpus(LIBRARY, EcsLogger("checkout.orders"))


if __name__ == "__main__":
    main()
