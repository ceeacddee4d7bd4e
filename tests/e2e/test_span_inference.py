"""Span inference for log lines in the seeds' format, which carry a trace id but no span id.

Two services export nested and parallel spans with the OpenTelemetry SDK's own OTLP/gRPC exporter
to a real agent, with start and end times set exactly; lines in the seeds' format
(`@timestamp, level, service, trace_id, message, data`) are written to a file the agent tails, at
known times inside (or just outside) those spans, by both services and by a third service that
sent no span. The collector must infer each line's span (issue 14, "Span inference"):
  - `containing`: the innermost span of the line's service whose [start, end] holds its timestamp,
    whatever another service's spans hold at that moment;
  - `service_entry`: no span of its service holds it (a clock a little off, a line after the
    span ended): that service's entry span in the trace;
  - `root`: its service has no span in the trace: the trace's root.
With backend's spans sent only after the trace's window, its lines are first indexed without them;
once the spans arrive, the documents must be written again with the span inferred from them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from tests.e2e.agent_harness import AgentProcess
from tests.e2e.collector_harness import CollectorProcess, search, wait_for_count
from tether.stack import Stack

pytestmark = pytest.mark.stack

TRACES = 12
MS = 1_000_000  # nanoseconds
WAIT_SECONDS = 2.0
LATE_SECONDS = WAIT_SECONDS + 3  # backend's spans, when late, are exported this long after the lines
REPAIR_SECONDS = 10.0  # how long documents may take to change once every span was sent

# One trace, in milliseconds from its start. frontend: its entry (root) span holds `render`, which
# holds `template`; `poll` runs beside backend's `charge`. backend: `charge`, holding two parallel
# spans `db-a` and `db-b` that overlap in [50, 60] (no line is put there: two spans of one depth).
SPANS: dict[str, tuple[str, str | None, int, int]] = {  # name: (service, parent, start, end)
    "GET /checkout": ("frontend", None, 0, 100),
    "render": ("frontend", "GET /checkout", 5, 30),
    "template": ("frontend", "render", 10, 20),
    "poll": ("frontend", "GET /checkout", 40, 90),
    "charge": ("backend", "GET /checkout", 40, 90),
    "db-a": ("backend", "charge", 45, 60),
    "db-b": ("backend", "charge", 50, 80),
}
ROOT = "GET /checkout"


@dataclass(frozen=True)
class Line:
    service: str
    at_ms: float
    rule: str  # tether.inference expected
    span: str  # the span expected, by name


LINES = [
    Line("frontend", 2, "containing", "GET /checkout"),
    Line("frontend", 7, "containing", "render"),
    Line("frontend", 15, "containing", "template"),  # nested: the innermost
    Line("frontend", 25, "containing", "render"),
    Line("frontend", 47, "containing", "poll"),  # backend's db-a holds it too: not the line's service
    Line("frontend", 95, "containing", "GET /checkout"),
    Line("backend", 42, "containing", "charge"),
    Line("backend", 47, "containing", "db-a"),  # parallel spans: the one that holds it
    Line("backend", 70, "containing", "db-b"),
    Line("backend", 85, "containing", "charge"),
    Line("backend", 38, "service_entry", "charge"),  # 2 ms before its span: clock skew
    Line("backend", 97, "service_entry", "charge"),  # after its span ended, inside the root
    Line("audit", 50, "root", ROOT),  # a service that sent no span in this trace
]


def _send_traces(
    endpoint: str, log_path: Path, run: str, backend_late: bool
) -> list[tuple[str, Line, dict[str, str]]]:
    """Every trace's spans through the SDK, and its lines in the seeds' format; returns, per line,
    its message, what it expects and the trace's span ids by name."""
    providers = {
        service: TracerProvider(resource=Resource.create({"service.name": service}))
        for service in ("frontend", "backend")
    }
    for service, provider in providers.items():
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        # Late: held until the explicit flush below (no timer, no full batch before it).
        delay = 600_000 if backend_late and service == "backend" else 100
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
    tracers = {s: p.get_tracer("tether.e2e.inference") for s, p in providers.items()}
    written: list[tuple[str, Line, dict[str, str]]] = []
    with log_path.open("a") as handle:
        for t in range(TRACES):
            start_ns = time.time_ns() - 200 * MS  # a trace that has just ended
            spans: dict[str, Any] = {}
            for name, (service, parent, start, _) in SPANS.items():
                context = trace.set_span_in_context(spans[parent]) if parent else None
                span = tracers[service].start_span(
                    f"{run} {name}",
                    context=context,
                    kind=SpanKind.SERVER if parent is None else SpanKind.INTERNAL,
                    start_time=start_ns + start * MS,
                )
                spans[name] = span
            for name, (_, _, _, end) in reversed(SPANS.items()):
                spans[name].end(end_time=start_ns + end * MS)
            trace_id = f"{spans[ROOT].get_span_context().trace_id:032x}"
            span_ids = {name: f"{s.get_span_context().span_id:016x}" for name, s in spans.items()}
            for n, line in enumerate(LINES):
                message = f"{run} trace {t} line {n}"
                at = datetime.fromtimestamp((start_ns + line.at_ms * MS) / 1e9, UTC)
                record = {
                    "@timestamp": at.isoformat(timespec="microseconds"),
                    "level": "INFO",
                    "service": line.service,
                    "trace_id": trace_id,
                    "message": message,
                    "data": {"trace": t, "line": n},
                }
                handle.write(json.dumps(record) + "\n")
                written.append((message, line, span_ids))
            handle.flush()
            time.sleep(0.05)
    if backend_late:
        time.sleep(LATE_SECONDS)
    for provider in providers.values():
        provider.force_flush()
        provider.shutdown()
    return written


@pytest.mark.parametrize("backend_late", [False, True], ids=["spans-on-time", "backend-spans-late"])
async def test_lines_without_span_id_get_their_span_inferred(
    stack: Stack, tmp_path: Path, backend_late: bool
) -> None:
    run = f"infer-{uuid.uuid4().hex[:10]}"
    agent = AgentProcess(
        stack,
        tmp_path,
        extra_config=f'files: {{include: ["{tmp_path}/logs/*.log"], poll_interval_seconds: 0.1}}',
    )
    await agent.create_topics()
    collector = CollectorProcess(
        stack, tmp_path, agent.logs_topic, agent.spans_topic, group=run, wait_seconds=WAIT_SECONDS
    )
    agent.start()
    collector.start()
    try:
        collector.wait_assigned()
        written = await asyncio.to_thread(
            _send_traces, f"127.0.0.1:{agent.grpc_port}", agent.log_dir / "app.log", run, backend_late
        )
        query = {"match_phrase": {"message": run}}
        hits = await wait_for_count(stack, "tether-logs", query, len(written), within=60)
        # Repairs by late spans come after the first versions: give them a few seconds to show.
        deadline = time.monotonic() + REPAIR_SECONDS
        while _wrong(hits, written, run) and time.monotonic() < deadline:
            await asyncio.sleep(1)
            hits = await search(stack, "tether-logs", query)
        await asyncio.sleep(1)  # duplicates, if any, show by now
        hits = await search(stack, "tether-logs", query)
        late_spans = collector.metrics().get('tether_collector_late_arrivals_total{kind="span"}', 0)
    finally:
        assert agent.stop() == 0, agent.tail()
        assert collector.stop() == 0, collector.tail()

    backend_spans = TRACES * sum(service == "backend" for service, *_ in SPANS.values())
    # The set-up itself: late spans did reach the collector after their trace was emitted.
    assert late_spans == (backend_spans if backend_late else 0), collector.tail()
    assert len(hits) == len(written) and len({h["_id"] for h in hits}) == len(written), collector.tail()
    wrong = _wrong(hits, written, run)
    rules = sorted({(line.rule, got[:2]) for line, got, _ in wrong})
    assert not wrong, (
        f"{len(wrong)} of {len(written)} lines wrong; (expected rule, got): {rules}\n{wrong[:5]}"
    )


def _wrong(
    hits: list[dict[str, Any]], written: list[tuple[str, Line, dict[str, str]]], run: str
) -> list[tuple[Line, tuple[Any, ...], tuple[Any, ...]]]:
    """The lines whose document is not (yet) inferred as expected: (line, got, expected)."""
    by_message = {hit["_source"]["message"]: hit["_source"] for hit in hits}
    wrong: list[tuple[Line, tuple[Any, ...], tuple[Any, ...]]] = []
    for message, line, span_ids in written:
        doc = by_message.get(message, {})
        tether = doc.get("tether", {})
        got = (tether.get("correlation"), tether.get("inference"), doc.get("span", {}).get("id"))
        expected = ("inferred", line.rule, span_ids[line.span])
        if got != expected:
            wrong.append((line, got, expected))
        elif doc["span"]["name"] != f"{run} {line.span}" or doc["service"]["name"] != line.service:
            wrong.append((line, (doc["span"]["name"], doc["service"]), (line.span, line.service)))
    return wrong
