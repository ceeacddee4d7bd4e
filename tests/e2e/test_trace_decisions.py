"""What the collector decides about whole traces, end to end (issue 14, "Done when"): logs inside
Jaeger's trace view, tail sampling across two collectors and a restart, RED metrics from spans.

Spans come from the OpenTelemetry SDK's own OTLP/gRPC exporter to a real agent; log lines in the
seeds' format (`@timestamp, level, service, trace_id, message, data`, no span id) are appended to
a file the agent tails. Collectors are real `tether collector` processes on the agent's topics,
against the Elasticsearch and Jaeger of `tether stack`. Every expectation is computed here from
what was sent and from the documented rules (schemas/README.md "Correlation", docs/sampling.md).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.e2e.agent_harness import AgentProcess, wait_until
from tests.e2e.collector_harness import CollectorProcess, search, wait_for_count
from tether.collector.red_metrics import DEFAULT_DURATION_BUCKETS_MS
from tether.collector.sampling import trace_hash
from tether.stack import Stack

pytestmark = pytest.mark.stack

MS = 1_000_000  # nanoseconds
WAIT_SECONDS = 2.0
FILES = 'files: {{include: ["{dir}/logs/*.log"], poll_interval_seconds: 0.1}}'


def _providers(endpoint: str, services: Iterable[str]) -> dict[str, TracerProvider]:
    providers = {}
    for service in services:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
        providers[service] = provider
    return providers


def _shutdown(providers: dict[str, TracerProvider]) -> None:
    for provider in providers.values():
        provider.force_flush()
        provider.shutdown()


def _write_line(
    handle: TextIO, at_ns: int, level: str, service: str, trace_id: str | None, message: str, data: Any
) -> None:
    """One line in the seeds' format: a trace id (or none), never a span id."""
    line = {
        # From integers: a float of the epoch in seconds is one bit short of microseconds.
        "@timestamp": (
            datetime.fromtimestamp(at_ns // 10**9, UTC) + timedelta(microseconds=at_ns // 1000 % 10**6)
        ).isoformat(timespec="microseconds"),
        "level": level,
        "service": service,
        "message": message,
        "data": data,
    }
    if trace_id is not None:
        line["trace_id"] = trace_id
    handle.write(json.dumps(line) + "\n")


def _start_agent(stack: Stack, root: Path) -> AgentProcess:
    return AgentProcess(stack, root, extra_config=FILES.format(dir=root))


def _assignments(collector: CollectorProcess) -> int:
    """How many times the process (all its runs: the output is appended) was given partitions."""
    return collector.output.read_bytes().count(b"partitions assigned") if collector.output.exists() else 0


async def _wait_assignments(*expected: tuple[CollectorProcess, int]) -> None:
    """Until each collector was given partitions that many times: the group has settled."""
    for collector, _ in expected:
        assert collector.process is not None and collector.process.poll() is None, collector.tail()
    await wait_until(
        lambda: all(_assignments(c) >= n for c, n in expected), 60, "the consumer group to settle"
    )


def _labelled(samples: dict[str, float], metric: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric with their labels."""
    out = []
    for name, value in samples.items():
        base, _, labels = name.partition("{")
        if base == metric:
            out.append((dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)), value))
    return out


def _jaeger_trace(stack: Stack, trace_id: str) -> dict[str, Any] | None:
    """The trace from Jaeger's HTTP API; None when Jaeger does not have it."""
    try:
        with urllib.request.urlopen(f"{stack.jaeger.query_url}/api/traces/{trace_id}", timeout=10) as r:
            body: dict[str, Any] = json.loads(r.read())
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    traces = body.get("data") or []
    assert len(traces) <= 1, body
    return traces[0] if traces else None


# ---------------------------------------------------------------------------------------------
# 1. Logs inside the trace view

MAX_EVENTS = 3  # jaeger.max_log_events_per_span, below the lines `render` logs
VIEW_TRACES = 4
# name: (service, parent, start ms, end ms); `idle` logs nothing.
VIEW_SPANS: dict[str, tuple[str, str | None, int, int]] = {
    "GET /order": ("frontend", None, 0, 100),
    "render": ("frontend", "GET /order", 10, 40),
    "query": ("frontend", "GET /order", 50, 90),
    "db": ("backend", "query", 55, 85),
    "idle": ("frontend", "GET /order", 92, 98),
}
# (service, ms, level, the span `containing` infers), in the order written to the file: render's
# lines newest first, so that time order is the collector's doing, not the file's.
VIEW_LINES: list[tuple[str, int, str, str]] = [
    ("frontend", 5, "INFO", "GET /order"),
    ("frontend", 36, "DEBUG", "render"),
    ("frontend", 30, "ERROR", "render"),
    ("frontend", 24, "INFO", "render"),
    ("frontend", 18, "WARN", "render"),
    ("frontend", 12, "INFO", "render"),
    ("frontend", 45, "WARN", "GET /order"),
    ("frontend", 70, "INFO", "query"),  # backend's `db` holds it too: not the line's service
    ("backend", 80, "ERROR", "db"),
    ("backend", 60, "INFO", "db"),
]
SHORT_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARN": "warn", "ERROR": "error"}


@dataclass(frozen=True, order=True)
class Event:
    """A log line as a span event, as Jaeger shows it (timestamp in microseconds)."""

    timestamp_us: int
    message: str
    level: str
    correlation: str
    inference: str


def _send_view_traces(endpoint: str, log_path: Path, run: str) -> dict[str, dict[str, list[Event]]]:
    """The traces' spans through the SDK and their lines to the file; returns, per trace id and
    span id, the events each span must carry in Jaeger (all of them: the test applies the cap)."""
    providers = _providers(endpoint, ("frontend", "backend"))
    tracers = {service: p.get_tracer("tether.e2e.view") for service, p in providers.items()}
    expected: dict[str, dict[str, list[Event]]] = {}
    with log_path.open("a") as handle:
        for t in range(VIEW_TRACES):
            start_ns = time.time_ns() - 200 * MS
            spans: dict[str, Any] = {}
            for name, (service, parent, start, _) in VIEW_SPANS.items():
                spans[name] = tracers[service].start_span(
                    f"{run} {name}",
                    context=trace.set_span_in_context(spans[parent]) if parent else None,
                    kind=SpanKind.SERVER if parent is None else SpanKind.INTERNAL,
                    start_time=start_ns + start * MS,
                )
            for name, (_, _, _, end) in reversed(VIEW_SPANS.items()):
                spans[name].end(end_time=start_ns + end * MS)
            trace_id = f"{spans['GET /order'].get_span_context().trace_id:032x}"
            by_span = expected[trace_id] = {
                f"{span.get_span_context().span_id:016x}": [] for span in spans.values()
            }
            for n, (service, at_ms, level, span_name) in enumerate(VIEW_LINES):
                at_ns = start_ns + at_ms * MS
                message = f"{run} trace {t} line {n}"
                _write_line(handle, at_ns, level, service, trace_id, message, {"line": n})
                span_id = f"{spans[span_name].get_span_context().span_id:016x}"
                event = Event(at_ns // 1000, message, SHORT_LEVELS[level], "inferred", "containing")
                by_span[span_id].append(event)
            handle.flush()
    _shutdown(providers)
    return expected


def _events(span: dict[str, Any]) -> list[Event | dict[str, Any]]:
    """A Jaeger span's logs: ours as Events, anything else as it came (it must not be there)."""
    out: list[Event | dict[str, Any]] = []
    for entry in span.get("logs", []):
        fields = {f["key"]: f["value"] for f in entry["fields"]}
        if fields.get("event") != "log":
            out.append(entry)
            continue
        out.append(
            Event(
                entry["timestamp"],
                fields.get("message", ""),
                fields.get("log.level", ""),
                fields.get("tether.correlation", ""),
                fields.get("tether.inference", ""),
            )
        )
    return out


async def test_spans_carry_their_inferred_lines_in_jaeger(stack: Stack, tmp_path: Path) -> None:
    run = f"view-{uuid.uuid4().hex[:10]}"
    agent = _start_agent(stack, tmp_path)
    await agent.create_topics()
    collector = CollectorProcess(
        stack,
        tmp_path,
        agent.logs_topic,
        agent.spans_topic,
        group=run,
        wait_seconds=WAIT_SECONDS,
        jaeger_options=f"max_log_events_per_span: {MAX_EVENTS}",
    )
    agent.start()
    collector.start()
    try:
        collector.wait_assigned()
        expected = await asyncio.to_thread(
            _send_view_traces, f"127.0.0.1:{agent.grpc_port}", agent.log_dir / "app.log", run
        )
        got: dict[str, dict[str, Any] | None] = {}

        def all_in_jaeger() -> bool:
            for trace_id, spans in expected.items():
                found = got.get(trace_id)
                if found is None or len(found["spans"]) < len(spans):
                    found = got[trace_id] = _jaeger_trace(stack, trace_id)
                if found is None or len(found["spans"]) < len(spans):
                    return False
            return True

        await wait_until(all_in_jaeger, 60, "every trace in Jaeger")
        await asyncio.sleep(1)  # a span stored twice would show by now
        got = {trace_id: _jaeger_trace(stack, trace_id) for trace_id in expected}
        metrics = collector.metrics()
    finally:
        assert agent.stop() == 0, agent.tail()
        assert collector.stop() == 0, collector.tail()

    overflow = 0
    for trace_id, by_span in expected.items():
        jaeger = got[trace_id]
        assert jaeger is not None, trace_id
        spans = {span["spanID"]: span for span in jaeger["spans"]}
        assert len(jaeger["spans"]) == len(spans) == len(by_span), jaeger["spans"]
        for span_id, events in by_span.items():
            in_time_order = sorted(events)
            overflow += max(len(events) - MAX_EVENTS, 0)
            assert _events(spans[span_id]) == in_time_order[:MAX_EVENTS], (
                spans[span_id]["operationName"],
                spans[span_id]["logs"],
            )
    # The set-up: some span had more lines than the cap, and one had none.
    assert overflow == VIEW_TRACES * (sum(s == "render" for *_, s in VIEW_LINES) - MAX_EVENTS) > 0
    assert metrics.get("tether_collector_log_events_dropped_total") == overflow, collector.tail()


# ---------------------------------------------------------------------------------------------
# 2. Tail sampling across two collectors and a restart
#
# Traffic comes in three phases: both collectors; one of them stopped by SIGTERM (its partitions
# move to the other); the same one started again (they are split again). The stop and the start
# fall between phases, once every trace sent so far is decided, for two reasons: the stopped
# process's counts must be read before it stops (a stop decides the traces it still holds, and
# those counts leave with the process), and a rebalance flushes the traces it holds
# (collector/service.py on_revoked), so a trace caught halfway would be decided on the part it had.

PROBABILITY = 0.3
SAMPLING = f"enabled: true, keep_error_spans: true, keep_error_logs: true, probability: {PROBABILITY}"
# The bound of collector/sampling.py's _bound(): kept when trace_hash(trace_id) is below it.
PROBABILITY_BOUND = int(PROBABILITY * (1 << 64))
PHASE_TRACES = 60  # per phase: both collectors, one after the SIGTERM, both after the restart
UNTRACED_PER_PHASE = 2
SERVICES = ("checkout", "payments")


@dataclass
class SentTrace:
    trace_id: str
    span_ids: set[str]
    messages: list[str]
    error_span: bool
    error_log: bool

    @property
    def policy(self) -> str:
        """What docs/sampling.md's rules decide: the first policy that matches."""
        if self.error_span:
            return "error_span"
        if self.error_log:
            return "error_log"
        return "probability"

    @property
    def kept(self) -> bool:
        return self.policy != "probability" or trace_hash(self.trace_id) < PROBABILITY_BOUND


@dataclass
class Sent:
    traces: list[SentTrace] = field(default_factory=list)
    untraced: list[str] = field(default_factory=list)


def _send_sampled_traces(endpoint: str, log_path: Path, run: str, first: int, sent: Sent) -> None:
    """PHASE_TRACES traces from number `first`: of every ten, one with an error span, one with an
    ERROR line, one with a FATAL line, one with both an error span and an ERROR line, six plain
    (lines at INFO and WARN only); and a few lines without a trace id."""
    providers = _providers(endpoint, SERVICES)
    with log_path.open("a") as handle:
        for t in range(first, first + PHASE_TRACES):
            kind = t % 10
            service = SERVICES[t % 2]
            tracer = providers[service].get_tracer("tether.e2e.sampling")
            error_span = kind in (0, 3)
            log_level = {1: "ERROR", 2: "FATAL", 3: "ERROR"}.get(kind, "WARN")
            messages = [f"{run} trace {t} line 0", f"{run} trace {t} line 1"]
            with tracer.start_as_current_span(f"{run} request") as root:
                trace_id = f"{root.get_span_context().trace_id:032x}"
                span_ids = {f"{root.get_span_context().span_id:016x}"}
                _write_line(handle, time.time_ns(), "INFO", service, trace_id, messages[0], {"t": t})
                for c in range(2):
                    with tracer.start_as_current_span(f"{run} step {c}") as child:
                        span_ids.add(f"{child.get_span_context().span_id:016x}")
                        if c == 1:
                            _write_line(handle, time.time_ns(), log_level, service, trace_id, messages[1], {})
                            if error_span:
                                child.set_status(Status(StatusCode.ERROR, "step failed"))
            sent.traces.append(SentTrace(trace_id, span_ids, messages, error_span, log_level != "WARN"))
            handle.flush()
            time.sleep(0.01)
        for n in range(UNTRACED_PER_PHASE):
            message = f"{run} untraced {first} {n}"
            _write_line(handle, time.time_ns(), "ERROR", "checkout", None, message, {})
            sent.untraced.append(message)
        handle.flush()
    _shutdown(providers)


def _decided(*metrics: dict[str, float]) -> Counter[tuple[str, str]]:
    """Traces decided, by (decision, policy), summed over processes' metrics."""
    totals: Counter[tuple[str, str]] = Counter()
    for samples in metrics:
        for labels, value in _labelled(samples, "tether_collector_sampled_traces_total"):
            totals[(labels["decision"], labels["policy"])] += int(value)
    return totals


async def test_sampling_keeps_whole_traces_across_two_collectors_and_a_restart(
    stack: Stack, tmp_path: Path
) -> None:
    run = f"sample-{uuid.uuid4().hex[:10]}"
    agent = _start_agent(stack, tmp_path)
    await agent.create_topics()
    first, second = (
        CollectorProcess(
            stack,
            tmp_path,
            agent.logs_topic,
            agent.spans_topic,
            group=run,
            wait_seconds=WAIT_SECONDS,
            name=name,
            sampling=SAMPLING,
        )
        for name in ("collector-a", "collector-b")
    )
    endpoint, log_path = f"127.0.0.1:{agent.grpc_port}", agent.log_dir / "app.log"
    sent = Sent()
    before_restart: dict[str, float] = {}
    agent.start()
    first.start()
    try:
        await _wait_assignments((first, 1))
        second.start()
        await _wait_assignments((first, 2), (second, 1))

        async def phase(number: int, *earlier: dict[str, float]) -> None:
            """Send a phase's traces, and wait until every trace sent so far is decided."""
            await asyncio.to_thread(
                _send_sampled_traces, endpoint, log_path, run, number * PHASE_TRACES, sent
            )
            await wait_until(
                lambda: _decided(first.metrics(), second.metrics(), *earlier).total() >= len(sent.traces),
                60,
                f"the {len(sent.traces)} traces of phases up to {number} decided",
            )

        await phase(0)
        before_restart = second.metrics()
        assert second.stop() == 0, second.tail()
        await _wait_assignments((first, 3))
        await phase(1, before_restart)
        second.start()
        await _wait_assignments((first, 4), (second, 2))
        await phase(2, before_restart)

        kept = [t for t in sent.traces if t.kept]
        dropped = [t for t in sent.traces if not t.kept]
        all_ids = [t.trace_id for t in sent.traces]
        spans_query = {"terms": {"trace.id": all_ids}}
        logs_query = {"match_phrase": {"message": run}}
        kept_spans = sum(len(t.span_ids) for t in kept)
        kept_lines = sum(len(t.messages) for t in kept) + len(sent.untraced)
        await wait_for_count(stack, "tether-spans", spans_query, kept_spans, within=60)
        await wait_for_count(stack, "tether-logs", logs_query, kept_lines, within=60)
        await wait_for_count(stack, "tether-traces", {"ids": {"values": all_ids}}, len(kept), within=60)
        await asyncio.sleep(2)  # documents of dropped traces, or twice written, would show by now
        span_hits = await search(stack, "tether-spans", spans_query)
        log_hits = await search(stack, "tether-logs", logs_query)
        summary_hits = await search(stack, "tether-traces", {"ids": {"values": all_ids}})
        jaeger = {trace_id: _jaeger_trace(stack, trace_id) for trace_id in all_ids}
        metrics = (before_restart, first.metrics(), second.metrics())
    finally:
        assert agent.stop() == 0, agent.tail()
        stopped = [collector.stop() for collector in (first, second)]
    assert stopped == [0, 0], first.tail() + second.tail()

    by_id = {t.trace_id: t for t in sent.traces}
    # The set-up: every policy kept some traces, and probability dropped some.
    assert {t.policy for t in kept} == {"error_span", "error_log", "probability"} and dropped
    # Spans: those of kept traces, once each, marked with the policy that kept them.
    expected_spans = {f"{t.trace_id}-{span_id}": t.policy for t in kept for span_id in t.span_ids}
    got_spans = Counter(hit["_id"] for hit in span_hits)
    assert got_spans == Counter(expected_spans.keys()), (
        f"missing {len(expected_spans.keys() - got_spans.keys())}, "
        f"dropped but indexed {len(got_spans.keys() - expected_spans.keys())}, "
        f"twice {[i for i, n in got_spans.items() if n > 1][:5]}"
    )
    for hit in span_hits:
        assert hit["_source"]["tether"]["sampling"]["policy"] == expected_spans[hit["_id"]], hit
    # Log lines: those of kept traces and every untraced one, once each.
    expected_lines = {message: t.policy for t in kept for message in t.messages}
    got_lines = Counter(hit["_source"]["message"] for hit in log_hits)
    assert got_lines == Counter([*expected_lines, *sent.untraced]), (
        f"missing {sorted(set(expected_lines) | set(sent.untraced) - got_lines.keys())[:5]}, "
        f"unexpected {sorted(got_lines.keys() - set(expected_lines) - set(sent.untraced))[:5]}"
    )
    for hit in log_hits:
        source = hit["_source"]
        if source["message"] in sent.untraced:
            assert source["tether"]["correlation"] == "untraced" and "sampling" not in source["tether"]
        else:
            assert source["tether"]["sampling"]["policy"] == expected_lines[source["message"]], source
            assert source["trace"]["id"] in by_id
    # Trace summaries: one per kept trace.
    got_summaries = Counter(hit["_id"] for hit in summary_hits)
    assert got_summaries == Counter(t.trace_id for t in kept)
    for hit in summary_hits:
        assert hit["_source"]["tether"]["sampling"]["policy"] == by_id[hit["_id"]].policy, hit
    # Jaeger: every span of the kept traces, nothing of the dropped.
    for t in sent.traces:
        found = jaeger[t.trace_id]
        if t.kept:
            assert found is not None and sorted(s["spanID"] for s in found["spans"]) == sorted(t.span_ids)
        else:
            assert found is None, (t.trace_id, found)
    # Metrics: each trace decided once, over three processes (the first run of the restarted one
    # included); the drops are exactly the dropped traces.
    decided = _decided(*metrics)
    expected_decisions = Counter(("keep", t.policy) for t in kept) + Counter(
        ("drop", "probability") for _ in dropped
    )
    assert decided == expected_decisions
    assert sum(n for (decision, _), n in decided.items() if decision == "drop") == len(dropped)
    # The set-up: each collector process decided some of the traces (partitions were split).
    assert all(_decided(m).total() > 0 for m in metrics), [_decided(m) for m in metrics]


# ---------------------------------------------------------------------------------------------
# 3. RED metrics

RED_TRACES = 40
# Child spans of a trace: (service, operation, duration ms, status); the root's is added below.
RED_CHILDREN: list[tuple[str, str, float, StatusCode]] = [
    ("checkout", "reserve", 0.4, StatusCode.UNSET),
    ("checkout", "price", 3.3, StatusCode.OK),
    ("payments", "charge", 37.0, StatusCode.UNSET),
    ("payments", "refund", 180.0, StatusCode.UNSET),
    ("search", "query", 720.0, StatusCode.UNSET),
]


def _red_spans(t: int) -> list[tuple[str, str, float, StatusCode]]:
    """Trace t's spans: a root of varying service and duration, and children some of which fail."""
    root = ("checkout" if t % 3 else "search", "GET /cart", 1.6 + t % 7 * 11.0, StatusCode.UNSET)
    children = [
        (s, o, d, StatusCode.ERROR if (t + i) % (i + 2) == 0 else code)
        for i, (s, o, d, code) in enumerate(RED_CHILDREN)
    ]
    return [root, *children]


def _send_red_traces(endpoint: str, run: str) -> None:
    providers = _providers(endpoint, ("checkout", "payments", "search"))
    for t in range(RED_TRACES):
        start_ns = time.time_ns() - 2000 * MS
        (root_service, root_op, root_ms, _), *children = _red_spans(t)
        root = (
            providers[root_service]
            .get_tracer("e2e")
            .start_span(f"{run} {root_op}", kind=SpanKind.SERVER, start_time=start_ns)
        )
        context = trace.set_span_in_context(root)
        for service, operation, ms, code in children:
            span = (
                providers[service]
                .get_tracer("e2e")
                .start_span(f"{run} {operation}", context=context, start_time=start_ns)
            )
            if code != StatusCode.UNSET:
                span.set_status(Status(code))
            span.end(end_time=start_ns + int(ms * MS))
        root.end(end_time=start_ns + int(root_ms * MS))
    _shutdown(providers)


def _red(samples: dict[str, float], metric: str) -> Counter[tuple[Any, ...]]:
    """A RED metric by its labels in name order: (le,) operation, service; `le` as a number."""
    return Counter(
        {
            tuple(float(v) if k == "le" else v for k, v in sorted(labels.items())): value
            for labels, value in _labelled(samples, metric)
        }
    )


async def test_red_metrics_match_the_spans_sent(stack: Stack, tmp_path: Path) -> None:
    run = f"red-{uuid.uuid4().hex[:10]}"
    agent = _start_agent(stack, tmp_path)
    await agent.create_topics()
    # Sampling drops most of the traces: RED metrics are counted before it, so they must not care.
    collectors = [
        CollectorProcess(
            stack,
            tmp_path,
            agent.logs_topic,
            agent.spans_topic,
            group=run,
            wait_seconds=WAIT_SECONDS,
            name=name,
            jaeger_enabled=False,
            sampling="enabled: true, probability: 0.0",
        )
        for name in ("collector-a", "collector-b")
    ]
    agent.start()
    collectors[0].start()
    collectors[1].start()
    total = RED_TRACES * (1 + len(RED_CHILDREN))
    try:
        await _wait_assignments((collectors[0], 1), (collectors[1], 1))
        await asyncio.to_thread(_send_red_traces, f"127.0.0.1:{agent.grpc_port}", run)

        def counted() -> float:
            return sum(_red(c.metrics(), "tether_collector_span_requests_total").total() for c in collectors)

        await wait_until(lambda: counted() >= total, 60, f"{total} spans counted")
        await asyncio.sleep(1)  # a span counted twice would show by now
        samples = [c.metrics() for c in collectors]
    finally:
        assert agent.stop() == 0, agent.tail()
        stopped = [collector.stop() for collector in collectors]
    assert stopped == [0, 0], collectors[0].tail() + collectors[1].tail()

    requests: Counter[tuple[Any, ...]] = Counter()
    errors: Counter[tuple[Any, ...]] = Counter()
    sums: dict[tuple[Any, ...], float] = {}
    buckets: Counter[tuple[Any, ...]] = Counter()
    bounds_ms = [*DEFAULT_DURATION_BUCKETS_MS, float("inf")]
    for t in range(RED_TRACES):
        for service, operation, ms, code in _red_spans(t):
            pair = (f"{run} {operation}", service)  # sorted label names: operation, service
            requests[pair] += 1
            errors[pair] += code == StatusCode.ERROR
            sums[pair] = sums.get(pair, 0.0) + int(ms * MS) / 1e9
            for bound in bounds_ms:
                if ms <= bound:  # cumulative, `le` inclusive (no duration sent is on a bound)
                    buckets[(bound / 1000, *pair)] += 1
    got = {
        metric: sum((_red(s, f"tether_collector_span_{metric}") for s in samples), Counter())
        for metric in ("requests_total", "errors_total", "duration_seconds_count", "duration_seconds_bucket")
    }
    # Each collector counted part of them: the sum is over two processes.
    assert all(_red(s, "tether_collector_span_requests_total").total() > 0 for s in samples)
    assert got["requests_total"] == requests
    assert got["errors_total"] == +errors and sum(errors.values()) > 0
    assert got["duration_seconds_count"] == requests
    assert got["duration_seconds_bucket"] == buckets
    got_sums = sum((_red(s, "tether_collector_span_duration_seconds_sum") for s in samples), Counter())
    assert got_sums.keys() == sums.keys()
    assert all(abs(got_sums[pair] - sums[pair]) < 1e-6 for pair in sums), (got_sums, sums)
