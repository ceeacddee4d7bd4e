"""Collector benchmark: Kafka (preloaded) -> collector -> Elasticsearch + Jaeger, against a ceiling.

    .venv/bin/python bench/collector_bench.py --traces 20000

Preloads Kafka with realistic traces (3 spans and 6 log lines each, as an agent writes them),
then runs one `tether collector` pinned to one core (taskset -c 1) until every document is
acknowledged, and reports documents/s (from the first record consumed to the last distinct
document counted in Elasticsearch), the start-up time before that (process start and joining the
group), CPU seconds per million documents (start-up included) and peak RSS. In the same run, the ceiling:
documents of the same shape (built by the collector's own document code, for twin traces under
another run id) written by a plain bulk loader (elasticsearch's async_bulk, pinned to the same
core) into the same Elasticsearch, once before and once after the collector; the ratio is against
their mean. Jaeger export is off in both, so the comparison is Elasticsearch-bound work only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, TopicPartition
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.e2e import collector_harness
from tests.e2e.agent_harness import PARTITIONS, free_port
from tests.e2e.collector_harness import Producer, TraceSpec, create_topics, new_topics
from tether.agent.encode import FileLine, encode_file_lines
from tether.agent.parse import parse_line
from tether.collector.config import ElasticsearchSinkConfig
from tether.collector.correlate import Budget, Stats, TraceBuffer
from tether.collector.documents import (
    log_documents,
    span_documents,
)
from tether.schemas.indices import daily_index
from tether.schemas.log_fields import default_mapping
from tether.stack import Stack
from tether.stack.kafka import delete_topics

# The collector's defaults for elasticsearch.max_concurrent_bulks and bulk_max_docs, given to the
# ceiling too.
CONCURRENT_BULKS = ElasticsearchSinkConfig.model_fields["max_concurrent_bulks"].default
BULK_MAX_DOCS = ElasticsearchSinkConfig.model_fields["bulk_max_docs"].default


def operations(traces: Iterable[TraceSpec]) -> list[TraceSpec]:
    """Span names as applications have them, a few per service (the harness names each span after
    its trace, which would make every span an operation of its own for the RED metrics, capped at
    1,000 series of 17 buckets: a /metrics page this bench would scrape ten times a second)."""
    out = list(traces)
    for trace in out:
        for child, span in enumerate(trace.spans):
            span.name = f"{span.name.split(' op ')[0]} op {child}"
    return out


async def preload(stack: Stack, logs_topic: str, spans_topic: str, traces: list[TraceSpec]) -> None:
    async with Producer(stack, logs_topic, spans_topic, agent_id="bench") as producer:
        for start in range(0, len(traces), 200):  # agent-sized records: many traces per record
            group = traces[start : start + 200]
            request = group[0].span_request([s for t in group for s in t.spans])
            await producer.spans(request)
            await producer.lines([line for t in group for line in t.lines])


def collector_run(
    stack: Stack,
    work: Path,
    logs_topic: str,
    spans_topic: str,
    expected: int,
    run: str,
    *,
    max_pending_mb: int,
    bulk_max_docs: int,
    sampling: float | None = None,
    records: int = 0,
) -> dict[str, float]:
    """Run the collector until it has indexed `expected` documents of `run`; with `sampling` (a
    probability), until it has consumed all `records` and holds and delivers nothing more."""
    ops = free_port()
    # Every trace of the bench logs an error line: without keep_error_logs, what is kept is the
    # error-span traces (1 in 5) and `sampling` of the rest.
    sampled = (
        f"sampling: {{enabled: true, keep_error_logs: false, probability: {sampling}}}"
        if sampling is not None
        else ""
    )
    config = work / "collector.yaml"
    config.write_text(f"""
log_level: warning
kafka: {{bootstrap_servers: "{stack.kafka.bootstrap}", group_id: "bench-{logs_topic}",
        logs_topic: {logs_topic}, spans_topic: {spans_topic}}}
correlation: {{wait_seconds: 1, max_pending_bytes: {max_pending_mb * 1024 * 1024}}}
elasticsearch: {{url: "{stack.elasticsearch.url}", replicas: 0, bulk_max_docs: {bulk_max_docs}}}
jaeger: {{enabled: false}}
ops: {{endpoint: "127.0.0.1:{ops}"}}
{sampled}
""")
    tether = str(Path(sys.executable).with_name("tether"))
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    process = subprocess.Popen(
        [*pin, tether, "collector", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(work / "collector.err").open("ab"),
    )
    began = time.perf_counter()
    try:
        # documents_out also counts summaries rewritten for late items, so it can reach `expected`
        # before every distinct document is in: finish on Elasticsearch's own count of this run.
        # Throughput counts from the first record consumed: joining a new consumer group waits
        # out the broker's group.initial.rebalance.delay.ms (3 s), which is not indexing speed.
        first_record: float | None = None
        cpu_at_first = 0.0
        while not _finished(ops, stack, run, expected, records if sampling is not None else 0):
            if process.poll() is not None:
                raise RuntimeError((work / "collector.err").read_text()[-3000:])
            if first_record is None and _metric(ops, "tether_collector_records_in_total") > 0:
                first_record, cpu_at_first = time.perf_counter(), process_cpu(process.pid)
            time.sleep(0.1)
        finished = time.perf_counter()
        elapsed = finished - (first_record or began)
        cpu = process_cpu(process.pid)
        rss = (
            next(
                int(line.split()[1])
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:")
            )
            / 1024
        )
        indexed = _metric(ops, "tether_collector_documents_out_total") if sampling is not None else expected
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    items = expected * 9 // 10  # 3 spans and 6 lines of every 10 documents: the input
    return {
        "documents": indexed,
        "startup_s": (first_record or began) - began,
        "seconds": elapsed,
        "docs_per_s": indexed / elapsed,
        "items_per_s": items / elapsed,
        "cpu_s_per_million": cpu / indexed * 1e6,
        "cpu_s_per_million_items": cpu / items * 1e6,
        # from the first record seen consumed (polled every 0.1 s) on: start-up (imports, joining
        # the group) left out, as a long-running collector amortizes it
        "running_cpu_s_per_million_items": (cpu - cpu_at_first) / items * 1e6,
        "peak_rss_mb": rss,
    }


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a running process has used."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _finished(ops: int, stack: Stack, run: str, expected: int, records: int) -> bool:
    """Every document indexed; or, sampling (`records` given), every record consumed and nothing
    held or in flight."""
    if records:
        return (
            _metric(ops, "tether_collector_records_in_total") >= records
            and _metric(ops, "tether_collector_buffered_traces") == 0
            and _metric(ops, "tether_collector_inflight_documents") == 0
        )
    return _metric(ops, "tether_collector_documents_out_total") >= expected and (
        asyncio.run(_indexed(stack, run)) >= expected
    )


async def records_in(stack: Stack, *topics: str) -> int:
    """How many records the topics hold (all preloaded: their end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka.bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for topic in topics for p in range(PARTITIONS)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def _indexed(stack: Stack, run: str) -> int:
    """Distinct documents of this run in Elasticsearch: its logs, spans and trace summaries."""
    es = AsyncElasticsearch(stack.elasticsearch.url, request_timeout=60)
    try:
        await es.indices.refresh(index="tether-logs,tether-spans,tether-traces")
        queries = [
            ("tether-logs", {"match_phrase": {"message": run}}),
            ("tether-spans", {"prefix": {"span.name": f"{run} op "}}),
            ("tether-traces", {"prefix": {"trace.root.operation": f"{run} op "}}),
        ]
        return sum([(await es.count(index=index, query=query))["count"] for index, query in queries])
    finally:
        await es.close()


def _metric(port: int, name: str) -> float:
    """The sum of a metric's samples (all labels) on the collector's /metrics: that metric's only,
    as the bench polls ten times a second, and rendering the whole page (RED metrics included)
    took ~4 % of the collector's CPU in this bench (py-spy, 2026-12-05)."""
    try:
        url = f"http://127.0.0.1:{port}/metrics?name[]={name}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in response.read().decode().splitlines()
                if line.startswith(name)
            )
    except OSError:
        return 0.0


def ceiling_documents(traces: list[TraceSpec], id_prefix: str) -> list[dict[str, object]]:
    """The collector's own documents for the same traces, with ids of their own."""
    mapping = default_mapping()
    buffer = TraceBuffer(0, Budget(10**9, 10**12), 0, Stats(), partition=0)
    outputs = []
    for trace in traces:
        for doc in span_documents(trace.span_request(trace.spans)):
            outputs += buffer.add_span(doc, 0, 1, 0)
        records = encode_file_lines(
            [FileLine(parse_line(line, mapping), i) for i, line in enumerate(trace.lines)],
            path="/bench.log",
            fingerprint="fp",
            agent_id="ceiling",
            observed_ns=time.time_ns(),
            partitions=1,
            untraced_partition=0,
        )
        for value in records.values():
            for log_doc in log_documents(ExportLogsServiceRequest.FromString(value), mapping):
                outputs += buffer.add_log(log_doc, 0, 1, 0)
    outputs += buffer.due(1, everything=True)
    return [
        {
            "_index": daily_index(o.alias, o.timestamp_ns),
            "_id": f"{id_prefix}-{o.doc_id}",
            "_source": o.source,
        }
        for o in outputs
    ]


def ceiling_measured(
    stack: Stack, actions: list[dict[str, object]], concurrency: int, chunk: int
) -> dict[str, float]:
    """The bulk loader pinned to the collector's core."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1} if len(previous) > 1 else previous)
    try:
        return asyncio.run(ceiling_run(stack, actions, concurrency, chunk))
    finally:
        os.sched_setaffinity(0, previous)


async def ceiling_run(
    stack: Stack, actions: list[dict[str, object]], concurrency: int, chunk: int
) -> dict[str, float]:
    """async_bulk over `concurrency` streams of `chunk`-document requests: the collector's own
    request size and number in flight (max_concurrent_bulks), so neither gets more parallelism."""
    es = AsyncElasticsearch(stack.elasticsearch.url, request_timeout=60)
    chunks = [actions[i : i + chunk] for i in range(0, len(actions), chunk)]
    totals = {"ok": 0, "errors": 0}

    async def stream(first: int) -> None:
        for part in chunks[first::concurrency]:
            ok, errors = await async_bulk(es, part, chunk_size=chunk, raise_on_error=False)
            totals["ok"] += ok
            totals["errors"] += len(errors) if isinstance(errors, list) else int(errors)

    try:
        began = time.perf_counter()
        await asyncio.gather(*(stream(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - began
    finally:
        await es.close()
    assert not totals["errors"], totals
    return {"documents": totals["ok"], "seconds": elapsed, "docs_per_s": totals["ok"] / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=int, default=20_000)
    # The collector's memory bounds (correlation.max_pending_bytes, elasticsearch.bulk_max_docs):
    # peak RSS should follow these, not the size of the preload.
    parser.add_argument("--max-pending-mb", type=int, default=64)
    parser.add_argument("--bulk-max-docs", type=int, default=BULK_MAX_DOCS)
    parser.add_argument(
        "--sampling",
        type=float,
        metavar="P",
        help="tail sampling on, keeping this share of the traces (and every error): its cost",
    )
    args = parser.parse_args()
    stack = Stack()
    stack.up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    logs_topic, spans_topic, run = new_topics("bench")
    # Traces happen as they are preloaded, as with an agent sending promptly (the harness's T0 is a
    # minute back, which would make every trace look like the late tail of an unknown one).
    collector_harness.T0 = time.time_ns()
    traces = operations(TraceSpec.make(n, run=run) for n in range(args.traces))
    expected = args.traces * (3 + 6 + 1)  # spans, logs, summary
    asyncio.run(create_topics(stack, logs_topic, spans_topic))
    asyncio.run(preload(stack, logs_topic, spans_topic, traces))
    # The ceiling writes documents of the same shape and size (another run id of the same length),
    # once before and once after the collector, so a growing index favours neither.
    ceilings = []
    for phase in ("before", "after"):
        twin_run = new_topics("bench")[2]
        twins = operations(TraceSpec.make(n, run=twin_run) for n in range(args.traces))
        ceilings.append(
            ceiling_measured(stack, ceiling_documents(twins, twin_run), CONCURRENT_BULKS, args.bulk_max_docs)
        )
        if phase == "before":
            with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
                collector = collector_run(
                    stack,
                    Path(tmp),
                    logs_topic,
                    spans_topic,
                    expected,
                    run,
                    max_pending_mb=args.max_pending_mb,
                    bulk_max_docs=args.bulk_max_docs,
                    sampling=args.sampling,
                    records=asyncio.run(records_in(stack, logs_topic, spans_topic)),
                )
    asyncio.run(delete_topics(stack.kafka.bootstrap, [logs_topic, spans_topic]))
    ceiling = {
        "docs_per_s_before": ceilings[0]["docs_per_s"],
        "docs_per_s_after": ceilings[1]["docs_per_s"],
        "docs_per_s": (ceilings[0]["docs_per_s"] + ceilings[1]["docs_per_s"]) / 2,
    }
    print(
        f"traces={args.traces} documents={expected} "
        f"max_pending_mb={args.max_pending_mb} bulk_max_docs={args.bulk_max_docs} sampling={args.sampling}"
    )
    print("collector          " + "  ".join(f"{k}={v:,.1f}" for k, v in collector.items()))
    print("ceiling_async_bulk " + "  ".join(f"{k}={v:,.1f}" for k, v in ceiling.items()))
    print(f"collector / ceiling = {collector['docs_per_s'] / ceiling['docs_per_s']:.2f}")


if __name__ == "__main__":
    main()
