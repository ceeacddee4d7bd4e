"""python-json-logger: JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s").

Ids and the service name come from OpenTelemetry's LoggingInstrumentor (see stdlib_logging.py):
otelTraceID / otelSpanID are "0" outside a span, and otelServiceName is the tracer provider's
resource service.name ("checkout") on every line.
"""

from __future__ import annotations

import logging

from corpus import SERVICE_NAME, Keys, LineContext, library_output_path, make_tracer_provider, write_corpus
from pythonjsonlogger.json import JsonFormatter
from stdlib_logging import emit_stdlib, instrument_logging, stream_logger

LIBRARY = "python-json-logger"


class JsonLoggerLogger:
    def __init__(self, logger_name: str) -> None:
        self.logger_name = logger_name

    def emit(self, line: LineContext) -> None:
        emit_stdlib(logging.getLogger(self.logger_name), line)

    def keys(self, line: LineContext) -> Keys:
        return Keys(
            message="message",
            level="levelname",
            time="asctime",
            trace_id="otelTraceID",
            span_id="otelSpanID",
            service="otelServiceName",
        )

    def service(self, line: LineContext) -> str | None:
        return SERVICE_NAME

    def rendered_message(self, line: LineContext) -> str:
        return line.message


def main() -> None:
    make_tracer_provider()
    instrument_logging()
    with library_output_path(LIBRARY).open("w", encoding="utf-8") as output:
        formatter = JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        stream_logger("checkout.orders", formatter, output)
        write_corpus(LIBRARY, JsonLoggerLogger("checkout.orders"))


if __name__ == "__main__":
    main()
