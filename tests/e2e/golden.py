"""Golden data for the fault suite: known log lines and spans, each with a unique id, and the check
that every one of them reached Elasticsearch exactly once and every trace reached Jaeger.

Lines are appended to a file the agent tails (the seeds' JSON format, most carrying the trace and
span ids of a golden span, some untraced); their unique id is their message, `<run> L<n>`. Spans
are made by the OpenTelemetry SDK and sent by its OTLP/gRPC exporter to the agent, as a client
that retries would: an export the agent did not answer OK (it was killed) is sent again, whole,
with a fresh exporter, until it is, so a span may reach the agent twice but is never given up.
A span's unique id is its span id; every span of a run has the service `golden-<run>`.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elasticsearch import AsyncElasticsearch
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tether.stack import Stack

SPANS_PER_TRACE = 3  # a root and two children
LINES_PER_SPAN = 2
EXPORT_GIVE_UP_SECONDS = 120  # an agent down longer than this is the test's failure, not a retry's


@dataclass
class Golden:
    """What a run sent: its line ids (messages), its spans (span id -> trace id, both hex)."""

    run: str
    agent_id: str  # every line's documents carry it (tether.agent_id)
    service: str  # every span's service.name
    lines: list[str] = field(default_factory=list)
    spans: dict[str, str] = field(default_factory=dict)

    @property
    def traces(self) -> dict[str, set[str]]:
        by_trace: dict[str, set[str]] = {}
        for span_id, trace_id in self.spans.items():
            by_trace.setdefault(trace_id, set()).add(span_id)
        return by_trace


class GoldenSource(threading.Thread):
    """Sends a run's golden data at a steady pace: per trace, its lines (written as its spans end)
    and `untraced` more lines, then the trace's spans in one OTLP export.

    `rotations` (after trace t: "rename" or "copytruncate") rotate the file between two traces, as
    logrotate would, and call `after_rotation` at once, before the agent's next poll. `day` puts
    every timestamp on that (UTC) day, at noon, so the run's documents go to daily indices of
    their own."""

    def __init__(
        self,
        golden: Golden,
        log_path: Path,
        otlp_endpoint: str,
        *,
        traces: int = 60,
        untraced: int = 20,
        pace_seconds: float = 0.15,
        day: datetime.date | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.golden, self.log_path, self.endpoint = golden, log_path, otlp_endpoint
        self.total_traces, self.untraced, self.pace = traces, untraced, pace_seconds
        self.day = day
        self.rotations: dict[int, str] = {}
        self.after_rotation: Callable[[], None] = lambda: None  # e.g. kill -9 the agent, racing it
        self.traces_sent = 0
        self.export_failures = 0  # exports sent again (the agent was down)
        self.error: BaseException | None = None
        self._memory = InMemorySpanExporter()
        self._provider = TracerProvider(resource=Resource.create({"service.name": golden.service}))
        self._provider.add_span_processor(SimpleSpanProcessor(self._memory))
        self._tracer = self._provider.get_tracer("tether.golden")
        self._exporter = self._new_exporter()
        self._clock = 0  # ns added to the base time, so every timestamp differs

    def run(self) -> None:
        try:
            with self.log_path.open("a") as handle:
                for t in range(self.total_traces):
                    self._trace(t, handle)
                    rotation = self.rotations.get(t)
                    if rotation == "rename":  # the app reopens its path, a new file
                        handle.close()
                        self.log_path.rename(self.log_path.with_name(self.log_path.name + ".1"))
                        handle = self.log_path.open("a")
                    elif rotation == "copytruncate":  # the app keeps its handle
                        shutil.copyfile(self.log_path, self.log_path.with_name(self.log_path.name + ".2"))
                        os.truncate(self.log_path, 0)
                    if rotation:
                        self.after_rotation()
                    self.traces_sent = t + 1
                    time.sleep(self.pace)
        except BaseException as error:  # the test reads it: a thread's exception is otherwise lost
            self.error = error
        finally:
            self._exporter.shutdown()
            self._provider.shutdown()

    def finish(self, within: float = 180) -> None:
        """Wait for every trace to be sent; fails on the thread's error."""
        self.join(within)
        assert not self.is_alive(), f"golden source still sending after {within}s ({self.traces_sent} traces)"
        if self.error is not None:
            raise AssertionError(f"golden source failed: {self.error!r}") from self.error

    def _now_ns(self) -> int:
        self._clock += 1_000_000
        if self.day is None:
            return time.time_ns() + self._clock
        noon = datetime.datetime(self.day.year, self.day.month, self.day.day, 12, tzinfo=datetime.UTC)
        return int(noon.timestamp()) * 1_000_000_000 + self._clock

    def _trace(self, t: int, handle: Any) -> None:
        root = self._tracer.start_span(f"{self.golden.run} request {t}", start_time=self._now_ns())
        context = trace.set_span_in_context(root)
        for c in range(SPANS_PER_TRACE - 1):
            child = self._tracer.start_span(
                f"{self.golden.run} step {t}.{c}", context, start_time=self._now_ns()
            )
            self._lines_of(child, handle)
            child.end(end_time=self._now_ns())
        self._lines_of(root, handle)
        for _ in range(self.untraced):
            self._write(handle, {"level": "info", "service": "golden-untraced"})
        handle.flush()
        root.end(end_time=self._now_ns())
        spans = self._memory.get_finished_spans()
        self._memory.clear()
        for span in spans:
            context_of = span.get_span_context()
            assert context_of is not None
            self.golden.spans[f"{context_of.span_id:016x}"] = f"{context_of.trace_id:032x}"
        self._export(spans)

    def _lines_of(self, span: trace.Span, handle: Any) -> None:
        context = span.get_span_context()
        for k in range(LINES_PER_SPAN):
            self._write(
                handle,
                {
                    "level": "error" if k else "info",
                    "service": self.golden.service,
                    "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
                    "data": {"k": k},
                },
            )

    def _write(self, handle: Any, fields: dict[str, Any]) -> None:
        line_id = f"{self.golden.run} L{len(self.golden.lines):06d}"
        stamp = datetime.datetime.fromtimestamp(self._now_ns() / 1e9, datetime.UTC)
        line = {"@timestamp": stamp.isoformat(timespec="microseconds"), **fields, "message": line_id}
        handle.write(json.dumps(line) + "\n")
        self.golden.lines.append(line_id)

    def _new_exporter(self) -> OTLPSpanExporter:
        return OTLPSpanExporter(endpoint=self.endpoint, insecure=True, timeout=5)

    def _export(self, spans: tuple[ReadableSpan, ...]) -> None:
        deadline = time.monotonic() + EXPORT_GIVE_UP_SECONDS
        while self._exporter.export(spans) is not SpanExportResult.SUCCESS:
            self.export_failures += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent took no spans for {EXPORT_GIVE_UP_SECONDS}s")
            # A fresh channel: gRPC's reconnect back-off would otherwise outlast a restart.
            self._exporter.shutdown()
            time.sleep(0.2)
            self._exporter = self._new_exporter()


@dataclass
class Tally:
    """How many documents each golden id has in Elasticsearch."""

    lines: Counter[str]
    spans: Counter[str]

    def missing(self, golden: Golden) -> tuple[list[str], list[str]]:
        return (
            [line for line in golden.lines if self.lines[line] == 0],
            [span for span in golden.spans if self.spans[span] == 0],
        )

    def duplicated(self) -> dict[str, int]:
        return {key: n for key, n in (self.lines + self.spans).items() if n > 1}


async def tally(stack: Stack, golden: Golden) -> Tally:
    es = AsyncElasticsearch(stack.elasticsearch.url)
    try:
        await es.indices.refresh(index="tether-logs,tether-spans", ignore_unavailable=True)
        lines = await _all(es, "tether-logs", {"term": {"tether.agent_id": golden.agent_id}}, "message")
        spans = await _all(es, "tether-spans", {"term": {"service.name": golden.service}}, "span.id")
    finally:
        await es.close()
    return Tally(Counter(lines), Counter(spans))


async def _all(es: AsyncElasticsearch, index: str, query: dict[str, Any], field_name: str) -> list[str]:
    """The field of every document matching `query` (a run stays within one page of 10,000)."""
    response = await es.search(
        index=index,
        query=query,
        size=10_000,
        track_total_hits=True,
        source_includes=[field_name],
        ignore_unavailable=True,
    )
    total = response["hits"]["total"]["value"]
    assert total <= 10_000, f"{total} documents: size the golden run within one page"
    values: list[str] = []
    for hit in response["hits"]["hits"]:
        value: Any = hit["_source"]
        for part in field_name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values.append(str(value))
    return values


def jaeger_spans(stack: Stack, trace_id: str) -> set[str]:
    """The span ids Jaeger's HTTP API has for a trace (none while it does not know it)."""
    try:
        with urllib.request.urlopen(
            f"{stack.jaeger.query_url}/api/traces/{trace_id}", timeout=10
        ) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return set()
        raise
    return {span["spanID"] for found in body.get("data") or [] for span in found["spans"]}


async def check(
    stack: Stack, golden: Golden, within: float = 120, diagnostics: Callable[[], str] = lambda: ""
) -> Tally:
    """Every golden line and span in Elasticsearch exactly once, every trace whole in Jaeger.

    Waits (up to `within`) for all to arrive, then a little longer for a late duplicate to show."""
    deadline = time.monotonic() + within
    while True:
        counted = await tally(stack, golden)
        missing_lines, missing_spans = counted.missing(golden)
        if not (missing_lines or missing_spans) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(3)  # a replay still in flight would land by now
    counted = await tally(stack, golden)
    missing_lines, missing_spans = counted.missing(golden)
    assert not missing_lines and not missing_spans, (
        f"{len(missing_lines)} of {len(golden.lines)} lines and {len(missing_spans)} of "
        f"{len(golden.spans)} spans missing in Elasticsearch; first: {missing_lines[:5]} {missing_spans[:5]}"
        f"\n{diagnostics()}"
    )
    duplicated = counted.duplicated()
    assert not duplicated, (
        f"{len(duplicated)} ids more than once: {list(duplicated.items())[:5]}\n{diagnostics()}"
    )
    strangers = set(counted.lines) - set(golden.lines) | set(counted.spans) - set(golden.spans)
    assert not strangers, f"documents of this run that were never sent: {sorted(strangers)[:5]}"

    incomplete: dict[str, set[str]] = {}
    for trace_id, span_ids in golden.traces.items():
        while True:
            found = await asyncio.to_thread(jaeger_spans, stack, trace_id)
            if found >= span_ids or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        if found != span_ids:
            incomplete[trace_id] = span_ids - found
    assert not incomplete, (
        f"{len(incomplete)} of {len(golden.traces)} traces incomplete in Jaeger: "
        f"{list(incomplete.items())[:3]}"
        f"\n{diagnostics()}"
    )
    return counted
