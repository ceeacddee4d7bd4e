"""What every Python logger generator shares: the scenario, the OTel tracer and the expected file.

Each generator (gen_*.py) wraps one library in a `LibraryLogger` and hands it to `write_corpus`,
which logs the same eight lines through it and writes `<library>.expected.jsonl` from what it
passed in (message, level, the span's ids, the clock around the call), never from the output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "checkout"
CORPUS_DIR = Path(__file__).resolve().parents[2]

# Extra structured fields of the "fields" line: a number, a float, a string, a list and a nested object.
ORDER_FIELDS: dict[str, object] = {
    "order_id": 1001,
    "amount": 12.5,
    "currency": "EUR",
    "items": ["sku-1", "sku-2"],
    "customer": {"id": 42, "tier": "gold"},
}
NON_ASCII_MESSAGE = 'Zahlung für "Müller" bestätigt: 5 € · 日本 ✓'


@dataclass(frozen=True)
class LineContext:
    """What the generator knows about one log call when it makes it."""

    level: str  # canonical: trace|debug|info|warn|error|fatal
    message: str
    fields: Mapping[str, object] = field(default_factory=dict)
    error: BaseException | None = None
    trace_id: str | None = None
    span_id: str | None = None


@dataclass(frozen=True)
class Keys:
    """Where a library wrote each value (dotted paths); None when the line has no such key."""

    message: str | None
    level: str | None
    time: str | None
    trace_id: str | None
    span_id: str | None
    service: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "message": self.message,
            "level": self.level,
            "time": self.time,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "service": self.service,
        }


class LibraryLogger(Protocol):
    """One library configured the way its users do; `emit` makes exactly one log call."""

    def emit(self, line: LineContext) -> None: ...

    def keys(self, line: LineContext) -> Keys: ...

    def service(self, line: LineContext) -> str | None: ...

    def rendered_message(self, line: LineContext) -> str: ...


def make_tracer_provider() -> TracerProvider:
    """A real SDK provider; no exporter is needed because sampled spans record without one."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    trace.set_tracer_provider(provider)
    return provider


def _span_ids(span: trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


@dataclass
class ExpectedWriter:
    """Times each call and keeps the expected object of each line, in order."""

    logger: LibraryLogger
    expected: list[dict[str, object]] = field(default_factory=list)

    def log(self, line: LineContext) -> None:
        before_ns = time.time_ns()
        self.logger.emit(line)
        after_ns = time.time_ns()
        self.expected.append(
            {
                "message": self.logger.rendered_message(line),
                "level": line.level,
                "trace_id": line.trace_id,
                "span_id": line.span_id,
                "service": self.logger.service(line),
                # Libraries print whole seconds or milliseconds: the window starts at the whole second.
                "time_min_ns": before_ns // 1_000_000_000 * 1_000_000_000,
                "time_max_ns": after_ns + 1_000_000,
                "keys": self.logger.keys(line).as_dict(),
            }
        )


@contextmanager
def _active_span(name: str) -> Iterator[tuple[str, str]]:
    tracer = trace.get_tracer("tether.logger-corpus")
    with tracer.start_as_current_span(name) as span:
        yield _span_ids(span)


def _failing_charge() -> None:
    raise RuntimeError("card declined")


def run_scenario(writer: ExpectedWriter) -> None:
    """The eight lines every library file holds (see README.md for the list)."""
    writer.log(LineContext("info", "user 42 logged in"))
    writer.log(LineContext("debug", "cache lookup for cart 7"))
    writer.log(LineContext("warn", "payment retry 2 of 3"))
    try:
        _failing_charge()
    except RuntimeError as error:
        writer.log(LineContext("error", "charge failed", error=error))
    with _active_span("place-order") as (trace_id, span_id):
        writer.log(LineContext("info", "order 1001 placed", trace_id=trace_id, span_id=span_id))
        with _active_span("reserve-stock") as (child_trace_id, child_span_id):
            writer.log(
                LineContext("warn", "stock low for sku-2", trace_id=child_trace_id, span_id=child_span_id)
            )
    writer.log(LineContext("info", "checkout completed", fields=ORDER_FIELDS))
    writer.log(LineContext("info", NON_ASCII_MESSAGE))


def write_corpus(library: str, logger: LibraryLogger) -> None:
    """Runs the scenario through `logger` and writes `<library>.expected.jsonl`.

    The caller has pointed the library's output at `library_output_path(library)` already.
    """
    writer = ExpectedWriter(logger)
    run_scenario(writer)
    expected_path = CORPUS_DIR / f"{library}.expected.jsonl"
    with expected_path.open("w", encoding="utf-8") as out:
        for entry in writer.expected:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")


def library_output_path(library: str) -> Path:
    return CORPUS_DIR / f"{library}.jsonl"
