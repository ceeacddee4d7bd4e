"""Correlation benchmark: the same traffic streamed live and replayed from a backlog, at scale.

    .venv/bin/python bench/correlation_backlog_bench.py                    # ~200k lines, ~100k spans
    .venv/bin/python bench/correlation_backlog_bench.py --traces 8000 --rate 800

The traffic of tests/e2e/test_correlation_backlog.py, larger: spans of two services sent by the
OpenTelemetry SDK's OTLP/gRPC exporter to a real `tether agent`, log lines naming their trace and
span written to a file it tails, at a steady pace. Live: a `tether collector` runs while the
traffic is made. Replay: the same traffic (another run, its own topics) is all written to Kafka by
the agent first, then a collector starts on the backlog. The collector keeps its default settings
unless told otherwise (Jaeger export off by default: the measurement is correlation, and Jaeger
would share the cores). For each way it reports the join rate (lines indexed with
`tether.correlation: span` over traced lines) and the other results, the traces emitted early by
the pending bound (`tether_collector_evicted_traces_total`), late arrivals, the collector's peak
RSS and CPU, and the wall time: live, from the first trace made to the last line indexed; replay,
from the collector's start to the last line indexed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elasticsearch import AsyncElasticsearch

from tests.e2e.agent_harness import AgentProcess, TetherProcess
from tests.e2e.collector_harness import CollectorProcess
from tests.e2e.test_correlation_backlog import (
    COLLECTOR_FIGURES,
    Traffic,
    agent_shipped,
    generate_traffic,
    new_agent,
)
from tether.stack import Stack
from tether.stack.kafka import delete_topics


async def correlation_counts(stack: Stack, run: str) -> tuple[int, Counter[str]]:
    """Lines of the run in Elasticsearch, and tether.correlation of its traced ones."""
    es = AsyncElasticsearch(stack.elasticsearch.url, request_timeout=120)
    try:
        await es.indices.refresh(index="tether-logs", ignore_unavailable=True)
        response = await es.search(
            index="tether-logs",
            query={"match_phrase": {"message": run}},
            size=0,
            track_total_hits=True,
            aggs={
                "traced": {
                    "filter": {"exists": {"field": "trace.id"}},
                    "aggs": {"results": {"terms": {"field": "tether.correlation", "size": 20}}},
                }
            },
        )
    finally:
        await es.close()
    buckets = response["aggregations"]["traced"]["results"]["buckets"]
    return int(response["hits"]["total"]["value"]), Counter({b["key"]: b["doc_count"] for b in buckets})


async def indexed(stack: Stack, run: str) -> int:
    es = AsyncElasticsearch(stack.elasticsearch.url, request_timeout=120)
    try:
        await es.indices.refresh(index="tether-logs", ignore_unavailable=True)
        response = await es.count(index="tether-logs", query={"match_phrase": {"message": run}})
        return int(response["count"])
    finally:
        await es.close()


def process_figures(process: TetherProcess) -> dict[str, float]:
    """Peak RSS (MB) and CPU seconds of a running process, from /proc."""
    assert process.process is not None
    pid = process.process.pid
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return {"peak_rss_mb": rss_kb / 1024, "cpu_s": cpu}


class Bench:
    def __init__(self, stack: Stack, work: Path, traffic: Traffic, args: argparse.Namespace) -> None:
        self.stack, self.work, self.traffic, self.args = stack, work, traffic, args
        self.expected = traffic.traced_lines + traffic.untraced_lines

    def collector(self, agent: AgentProcess, way: str) -> CollectorProcess:
        a = self.args
        kafka = ", ".join(
            option
            for option in (
                f"max_poll_records: {a.max_poll_records}" if a.max_poll_records else "",
                a.kafka_options,
            )
            if option
        )
        correlation = ", ".join(
            f"{key}: {value}"
            for key, value in (
                ("max_pending_traces", a.max_pending_traces),
                ("max_recent_traces", a.max_recent_traces),
                ("max_pending_bytes", a.max_pending_mb * 1024 * 1024),
            )
            if value
        )
        return CollectorProcess(
            self.stack,
            self.work / way,
            agent.logs_topic,
            agent.spans_topic,
            group=f"bench-{agent.logs_topic}",
            wait_seconds=a.wait_seconds,
            kafka_options=kafka,
            elasticsearch_options=a.elasticsearch_options,
            correlation_options=correlation,
            jaeger_enabled=a.jaeger,
        )

    async def until_indexed(self, collector: CollectorProcess, run: str) -> float:
        """Until every line of the run is indexed; the time it happened (perf_counter)."""
        deadline = time.perf_counter() + self.args.timeout
        while time.perf_counter() < deadline:
            assert collector.process is not None and collector.process.poll() is None, collector.tail()
            if await indexed(self.stack, run) >= self.expected:
                return time.perf_counter()
            await asyncio.sleep(1)
        raise TimeoutError(f"{run}: not every line indexed within {self.args.timeout}s")

    async def generate(self, agent: AgentProcess, run: str) -> None:
        endpoint = f"127.0.0.1:{agent.grpc_port}"
        await asyncio.to_thread(generate_traffic, endpoint, agent.log_dir / "app.log", run, self.traffic)
        await agent_shipped(agent, self.traffic, within=self.args.timeout)

    async def live(self) -> dict[str, Any]:
        run = f"bench-live-{os.urandom(5).hex()}"
        agent = new_agent(self.stack, self.work / "live")
        await agent.create_topics()
        collector = self.collector(agent, "live")
        agent.start()
        collector.start()
        try:
            collector.wait_assigned()
            began = time.perf_counter()
            await self.generate(agent, run)
            generated = time.perf_counter() - began
            finished = await self.until_indexed(collector, run)
            figures = self.collector_figures(collector)
        finally:
            agent.stop()
            collector.stop()
        results = await self.results(run)
        await delete_topics(self.stack.kafka.bootstrap, [agent.logs_topic, agent.spans_topic])
        return {"generate_s": generated, "wall_s": finished - began, **figures, **results}

    async def replay(self) -> dict[str, Any]:
        run = f"bench-replay-{os.urandom(5).hex()}"
        agent = new_agent(self.stack, self.work / "replay")
        await agent.create_topics()
        collector = self.collector(agent, "replay")
        agent.start()
        try:
            began = time.perf_counter()
            await self.generate(agent, run)
            generated = time.perf_counter() - began
        finally:
            agent.stop()
        began = time.perf_counter()
        collector.start()
        try:
            finished = await self.until_indexed(collector, run)
            figures = self.collector_figures(collector)
        finally:
            collector.stop()
        results = await self.results(run)
        await delete_topics(self.stack.kafka.bootstrap, [agent.logs_topic, agent.spans_topic])
        return {"generate_s": generated, "wall_s": finished - began, **figures, **results}

    def collector_figures(self, collector: CollectorProcess) -> dict[str, float]:
        figures = process_figures(collector)
        for name, value in collector.metrics().items():
            if name.startswith(COLLECTOR_FIGURES):
                figures[name.removeprefix("tether_collector_").replace("_total", "")] = value
        return figures

    async def results(self, run: str) -> dict[str, Any]:
        await asyncio.sleep(2)  # summaries and repairs of the last traces
        documents, traced = await correlation_counts(self.stack, run)
        return {
            "join_rate": traced["span"] / max(traced.total(), 1),
            "lines_indexed": documents,
            "traced": dict(traced),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=int, default=33_000, help="traces per way")
    parser.add_argument("--children", type=int, default=2, help="spans per trace besides the root")
    parser.add_argument("--lines-per-span", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1000, help="traces made per second")
    parser.add_argument("--span-payload-bytes", type=int, default=256)
    parser.add_argument("--ways", default="live,replay", help="live, replay or both")
    # Collector settings; unset: the collector's defaults.
    parser.add_argument("--wait-seconds", type=float, default=5.0, help="correlation.wait_seconds")
    parser.add_argument("--max-pending-traces", type=int, default=0, help="correlation.max_pending_traces")
    parser.add_argument("--max-poll-records", type=int, default=0, help="kafka.max_poll_records")
    parser.add_argument(
        "--kafka-options", default="", help='more kafka settings, e.g. "fetch_max_bytes: 2097152"'
    )
    parser.add_argument(
        "--elasticsearch-options",
        default="",
        help='more elasticsearch settings, e.g. "max_concurrent_bulks: 2"',
    )
    parser.add_argument("--max-pending-mb", type=int, default=0, help="correlation.max_pending_bytes")
    parser.add_argument("--max-recent-traces", type=int, default=0, help="correlation.max_recent_traces")
    parser.add_argument("--jaeger", action="store_true", help="export spans to Jaeger too")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for each phase")
    args = parser.parse_args()
    traffic = Traffic(
        traces=args.traces,
        traces_per_second=args.rate,
        children=args.children,
        lines_per_span=args.lines_per_span,
        span_payload_bytes=args.span_payload_bytes,
    )
    stack = Stack()
    stack.up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    print(
        f"traces={traffic.traces} spans={traffic.spans} traced_lines={traffic.traced_lines} "
        f"untraced_lines={traffic.untraced_lines} rate={args.rate}/s wait_seconds={args.wait_seconds} "
        f"max_pending_traces={args.max_pending_traces or 'default'} "
        f"max_recent_traces={args.max_recent_traces or 'default'} "
        f"max_pending_mb={args.max_pending_mb or 'default'} "
        f"max_poll_records={args.max_poll_records or 'default'} jaeger={args.jaeger} "
        f"kafka_options={args.kafka_options or None} "
        f"elasticsearch_options={args.elasticsearch_options or None}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="tether-backlog-bench-") as tmp:
        bench = Bench(stack, Path(tmp), traffic, args)
        try:
            for way in args.ways.split(","):
                figures = asyncio.run(bench.live() if way == "live" else bench.replay())
                print(f"{way:<7}" + "  ".join(_shown(k, v) for k, v in figures.items()), flush=True)
        finally:
            TetherProcess.reap()


def _shown(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{key}={value:,.4f}" if key == "join_rate" else f"{key}={value:,.1f}"
    return f"{key}={value}"


if __name__ == "__main__":
    main()
