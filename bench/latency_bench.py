"""End-to-end latency under load: from a line written to a file (or a span exported by the
OpenTelemetry SDK) to the document being searchable in Elasticsearch, p50 and p99, beside the
collector's correlation window.

    .venv/bin/python bench/latency_bench.py                          # ~1.5 minutes
    .venv/bin/python bench/latency_bench.py --lines-per-s 5000 --window 60 --wait-seconds 2

A real `tether agent` (default settings but its topics: it polls its files every 0.25 s) and a
real `tether collector` (default settings: correlation.wait_seconds 5 s, Jaeger export on; one
shard, no replica, as the e2e harness has it) run on the open stack (`tether stack up`). Load,
steady, made by two processes:
- a file writer: agent_bench.realistic_line lines (~290 B JSON, 95 % naming a trace that has no
  spans, as lines of uninstrumented callers do) paced in one write every 10 ms, and among them
  untraced marker lines (no trace id), each with a unique `marker` field;
- the OpenTelemetry SDK (TracerProvider, BatchSpanProcessor at a 100 ms delay, OTLP/gRPC exporter to
  the agent): traces of a root span and a child span, each span logging one line (trace and span
  ids named) to a second file while it is open; every `--mark-every`th trace's root span and root
  line are markers.

Times: a line's is taken just before its write (and flush) to the file; a span's just before the
OTLP export call that carries it (an exporter wrapped around the SDK's OTLP one), i.e. after the
SDK's batching delay. Markers are streamed to this process, which polls Elasticsearch every
`--poll` seconds without refreshing (documents become searchable by the index's own 1 s refresh):
one terms query per kind for the markers not yet seen (`data.marker` of log documents, `span.name`
of span documents). A marker's latency is the end of the first search that returned it minus its
write (or export) time; it became searchable after the start of the search before, so the error
is at most one poll period plus a search round trip (the mean of that interval is printed as the
resolution). The documents carry no time of their own ingestion (`event.ingested` is mapped but
not written by the collector), so the split between pipeline and Elasticsearch refresh is not shown.

The stack is shared: Elasticsearch's write queue (bulks waiting, sampled each second of the window)
and the agent's and collector's CPU shares are printed with the figures, so a run slowed by other
writers to the same Elasticsearch can be told from one slowed by the pipeline.

Traced lines and spans wait in the collector for the correlation window (a trace is held for
`wait_seconds` after its first item), untraced lines do not: both kinds are reported. Only markers
written in the measured window (after the warm-up) count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from agent_bench import realistic_line
from elasticsearch import Elasticsearch
from footprint_bench import line_pool, proc_cpu_seconds

from tests.e2e.agent_harness import AgentProcess, TetherProcess
from tests.e2e.collector_harness import CollectorProcess
from tether.collector.config import CorrelationConfig
from tether.stack import Stack
from tether.stack.kafka import delete_topics

DEFAULT_WAIT_SECONDS = float(CorrelationConfig.model_fields["wait_seconds"].default)
TICK_S = 0.01
KINDS = ("untraced line", "traced line", "span")


def iso_now() -> tuple[float, str]:
    now = time.time()
    return now, datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def file_writer(
    path: str,
    rate: float,
    marks_per_s: float,
    run: str,
    seconds: float,
    markers: multiprocessing.queues.Queue[tuple[str, str, float]],
) -> None:
    """`rate` lines/s for `seconds`, in one write every TICK_S; `marks_per_s` of them untraced markers
    (each written, and timed, on its own just before the tick's other lines)."""
    pool, _ = line_pool()
    rng = random.Random(1)
    began = time.monotonic()
    count = marks = 0
    with open(path, "ab", buffering=0) as handle:
        while (elapsed := time.monotonic() - began) < seconds:
            due_marks = int(elapsed * marks_per_s)
            while marks < due_marks:
                line = orjson.loads(realistic_line(marks, rng))
                for key in ("trace_id", "span_id"):
                    line.pop(key, None)
                marker = f"{run}-u-{marks}"
                now, line["@timestamp"] = iso_now()
                line["message"] = f"untraced marker {marker}"
                line["marker"] = marker
                handle.write(orjson.dumps(line) + b"\n")
                markers.put(("untraced line", marker, now))
                marks += 1
                count += 1
            due = int(elapsed * rate)
            if due > count:
                start = count % len(pool)
                chunk = pool[start : start + (due - count)]
                handle.write(b"".join(chunk))
                count += len(chunk)
            time.sleep(TICK_S)


def span_maker(
    endpoint: str,
    path: str,
    traces_per_s: float,
    mark_every: int,
    run: str,
    seconds: float,
    markers: multiprocessing.queues.Queue[tuple[str, str, float]],
) -> None:
    """Traces through the OpenTelemetry SDK, each span logging a line to `path` while it is open."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    prefix = f"{run}-s-"

    class TimedExporter(SpanExporter):
        """The SDK's OTLP exporter, timing each marker span as its export call starts."""

        def __init__(self) -> None:
            self.inner = OTLPSpanExporter(endpoint=endpoint, insecure=True)

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            now = time.time()
            for span in spans:
                if span.name.startswith(prefix):
                    markers.put(("span", span.name, now))
            return self.inner.export(spans)

        def shutdown(self) -> None:
            self.inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(
        BatchSpanProcessor(
            TimedExporter(), max_queue_size=100_000, schedule_delay_millis=100, max_export_batch_size=512
        )
    )
    tracer = provider.get_tracer("tether.bench.latency")
    began = time.monotonic()
    t = 0
    with open(path, "ab", buffering=0) as handle:

        def log(span: Any, message: str, marker: str | None) -> None:
            context = span.get_span_context()
            now, stamp = iso_now()
            line: dict[str, Any] = {
                "@timestamp": stamp,
                "level": "info",
                "service": "checkout",
                "trace_id": f"{context.trace_id:032x}",
                "span_id": f"{context.span_id:016x}",
                "message": message,
                "data": {"region": "eu-west-1", "path": "/api/v1/orders", "latency_ms": t % 500},
            }
            if marker:
                line["marker"] = marker
            handle.write(orjson.dumps(line) + b"\n")
            if marker:
                markers.put(("traced line", marker, now))

        while time.monotonic() - began < seconds:
            marked = t % mark_every == 0
            name = f"{prefix}{t}" if marked else "GET /api/v1/orders"
            with tracer.start_as_current_span(name) as root:
                log(root, f"order placed id={t}", f"{run}-t-{t}" if marked else None)
                with tracer.start_as_current_span("SELECT orders") as child:
                    log(child, f"slow query id={t}", None)
            t += 1
            ahead = began + t / traces_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    provider.force_flush()
    provider.shutdown()


class Poller:
    """Markers not yet seen, by kind; each poll asks Elasticsearch for them."""

    def __init__(self, es: Elasticsearch) -> None:
        self.es = es
        self.unseen: dict[str, dict[str, float]] = {kind: {} for kind in KINDS}
        # marker -> (written, previous search sent, seen, correlation)
        self.seen: dict[str, dict[str, tuple[float, float, float, str]]] = {k: {} for k in KINDS}
        self.previous_sent = {kind: 0.0 for kind in KINDS}

    def add(self, kind: str, marker: str, written: float) -> None:
        self.unseen[kind][marker] = written

    def poll(self) -> None:
        for kind, unseen in self.unseen.items():
            if not unseen:
                continue
            names = list(unseen)[:5000]
            if kind == "span":
                index, query = "tether-spans", {"terms": {"span.name": names}}
                fields = ["span.name"]
            else:
                index, query = "tether-logs", {"terms": {"data.marker": names}}
                fields = ["data.marker", "tether.correlation"]
            sent = time.time()
            response = self.es.search(
                index=index, query=query, size=len(names), source_includes=fields, ignore_unavailable=True
            )
            received = time.time()
            for hit in response["hits"]["hits"]:
                source = hit["_source"]
                marker = source["span"]["name"] if kind == "span" else source["data"]["marker"]
                if marker not in unseen:
                    continue
                correlation = source.get("tether", {}).get("correlation", "")
                previous = self.previous_sent[kind] or sent
                self.seen[kind][marker] = (unseen.pop(marker), previous, received, correlation)
            self.previous_sent[kind] = sent


def write_queue_depth(es: Elasticsearch) -> int:
    """Bulk requests waiting in Elasticsearch's write thread pools, every node."""
    stats = es.nodes.stats(metric="thread_pool")
    return sum(int(node["thread_pool"]["write"]["queue"]) for node in stats["nodes"].values())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(poller: Poller, since: float, until: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        rows = [row for row in poller.seen[kind].values() if since <= row[0] < until]
        missing = [w for w in poller.unseen[kind].values() if since <= w < until]
        if not rows:
            out[kind] = {"count": 0, "missing": len(missing)}
            continue
        latency = [seen - written for written, _, seen, _ in rows]
        # the earliest it can have become searchable: when the search before the one that found it began
        earliest = [previous - written for written, previous, _, _ in rows]
        out[kind] = {
            "count": len(rows),
            "missing": len(missing),
            "p50_s": percentile(latency, 0.50),
            "p99_s": percentile(latency, 0.99),
            "max_s": max(latency),
            "lower_bound_p50_s": percentile(earliest, 0.50),
            "lower_bound_p99_s": percentile(earliest, 0.99),
            "resolution_mean_s": statistics.fmean(seen - previous for _, previous, seen, _ in rows),
            "correlation": {c: sum(1 for r in rows if r[3] == c) for c in {r[3] for r in rows}},
        }
    return out


def run_once(stack: Stack, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    run = f"lat{os.urandom(4).hex()}"
    agent = AgentProcess(
        stack, work / "agent", extra_config=f'files: {{include: ["{work}/agent/logs/*.log"]}}'
    )
    asyncio.run(agent.create_topics())
    collector = CollectorProcess(
        stack,
        work / "collector",
        agent.logs_topic,
        agent.spans_topic,
        group=f"latency-{run}",
        wait_seconds=args.wait_seconds,
        jaeger_enabled=not args.no_jaeger,
    )
    agent.start()
    collector.start()
    es = Elasticsearch(stack.elasticsearch.url, request_timeout=30)
    context = multiprocessing.get_context("fork")
    markers: multiprocessing.queues.Queue[tuple[str, str, float]] = context.Queue()
    seconds = args.warmup + args.window
    traced_lines_per_s = 2 * args.traces_per_s
    children = [
        context.Process(
            target=file_writer,
            args=(
                str(agent.log_dir / "app.log"),
                args.lines_per_s - traced_lines_per_s,
                args.traces_per_s / args.mark_every,
                run,
                seconds,
                markers,
            ),
            daemon=True,
        ),
        context.Process(
            target=span_maker,
            args=(
                f"127.0.0.1:{agent.grpc_port}",
                str(agent.log_dir / "traced.log"),
                args.traces_per_s,
                args.mark_every,
                run,
                seconds,
                markers,
            ),
            daemon=True,
        ),
    ]
    poller = Poller(es)
    try:
        collector.wait_assigned()
        began = time.time()
        for child in children:
            child.start()
        since, until = began + args.warmup, began + seconds
        deadline = until + args.drain
        # CPU seconds of the agent and the collector through the measured window: a pipeline that
        # falls behind shows here (and in the load average) as well as in its latency
        processes = {"agent": agent, "collector": collector}
        cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in processes}
        # Elasticsearch's write queue through the window: the stack is shared, and bulks of other
        # writers queued ahead of the collector's show as latency that is neither tether's nor load's
        write_queue: list[int] = []
        sampled = 0.0
        while time.time() < deadline:
            if since <= time.time() < until and time.time() - sampled >= 1:
                sampled = time.time()
                write_queue.append(write_queue_depth(es))
            while not markers.empty():
                poller.add(*markers.get())
            poller.poll()
            for name, process in processes.items():
                marks = cpu[name]
                if (not marks and time.time() >= since) or (len(marks) == 1 and time.time() >= until):
                    assert process.process is not None
                    marks.append((time.time(), proc_cpu_seconds(process.process.pid)))
            if time.time() > until + 2 and not any(child.is_alive() for child in children):
                while not markers.empty():
                    poller.add(*markers.get())
                if not any(w < until for kind in KINDS for w in poller.unseen[kind].values()):
                    break
            time.sleep(args.poll)
        agent_metrics = agent.metrics()
        figures = summarise(poller, since, until)
        figures["load"] = {
            "lines_per_s": args.lines_per_s,
            "spans_per_s": 2 * args.traces_per_s,
            "agent_lines_read": agent_metrics.get("tether_agent_file_lines_total", 0),
            "agent_spans_received": agent_metrics.get("tether_agent_otlp_received_total", 0),
        }
        if write_queue:
            figures["load"]["es_write_queue_mean"] = statistics.fmean(write_queue)
            figures["load"]["es_write_queue_max"] = max(write_queue)
        for name, marks in cpu.items():
            if len(marks) == 2:
                figures["load"][f"{name}_cpu_share"] = (marks[1][1] - marks[0][1]) / (
                    marks[1][0] - marks[0][0]
                )
        return figures
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
        es.close()
        agent.stop()
        collector.stop()
        asyncio.run(delete_topics(stack.kafka.bootstrap, [agent.logs_topic, agent.spans_topic]))


def table(figures: dict[str, Any], wait_seconds: float) -> str:
    rows = [
        f"correlation.wait_seconds = {wait_seconds:g} s",
        "| kind | markers | p50 | p99 | max | lower bound p50 / p99 | resolution | tether.correlation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        f = figures[kind]
        if not f["count"]:
            rows.append(f"| {kind} | 0 (missing {f['missing']}) | | | | | | |")
            continue
        rows.append(
            f"| {kind} | {f['count']} (missing {f['missing']}) | {f['p50_s']:.2f} s | {f['p99_s']:.2f} s "
            f"| {f['max_s']:.2f} s | {f['lower_bound_p50_s']:.2f} / {f['lower_bound_p99_s']:.2f} s "
            f"| {f['resolution_mean_s']:.2f} s "
            f"| {json.dumps(f['correlation']) if kind != 'span' else '-'} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines-per-s", type=float, default=2000, help="all lines written, per second")
    parser.add_argument("--traces-per-s", type=float, default=100, help="SDK traces (2 spans, 2 lines each)")
    parser.add_argument("--mark-every", type=int, default=5, help="one trace in this many is a marker")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=30.0, help="seconds of markers measured")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for the last markers")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between Elasticsearch polls")
    parser.add_argument("--wait-seconds", type=float, default=DEFAULT_WAIT_SECONDS)
    parser.add_argument("--no-jaeger", action="store_true", help="the collector without Jaeger export")
    parser.add_argument("--json", type=Path, help="also write the figures there")
    args = parser.parse_args()
    stack = Stack()
    if any(pid is None for _, pid, _, _ in stack.status()):
        stack.up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="tether-latency-") as tmp:
        try:
            figures = run_once(stack, Path(tmp), args)
        finally:
            TetherProcess.reap()
    marks = args.traces_per_s / args.mark_every
    print(
        f"cpu={os.cpu_count()} load: {args.lines_per_s:g} lines/s ({2 * args.traces_per_s:g} traced in SDK "
        f"spans, the rest ~290 B realistic lines), {2 * args.traces_per_s:g} spans/s; markers {marks:g}/s "
        f"of each kind over {args.window:g} s after {args.warmup:g} s warm-up; poll {args.poll:g} s; "
        f"Jaeger export {'off' if args.no_jaeger else 'on'}"
    )
    print("load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    shown = "  ".join(f"{k}={v:,.3g}" for k, v in figures["load"].items())
    print(f"pipeline: {shown}")
    print(table(figures, args.wait_seconds))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, **figures}, indent=2))


if __name__ == "__main__":
    main()
