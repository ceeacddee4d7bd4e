"""Peers in the same run: the agent, the OpenTelemetry Collector and rsyslog on the same lines and spans.

    .venv/bin/python bench/peers_bench.py                     # 300k lines, 262,144 spans: a few minutes
    .venv/bin/python bench/peers_bench.py --lines 1000000 --spans 0 --json /tmp/peers.json

The phases are agent_bench's own (`bench_file`, `bench_otlp`), run once for the agent and once with
each peer in the agent's place: the same generated lines written to a file that appears when the
clock starts, the same OTLP/gRPC requests (512 spans each, 16 in flight), the process under test
pinned to one core (`taskset -c 1`) with the stack's servers and the load generator kept off it, its
CPU time from /proc and its peak RSS (VmHWM). A file phase ends when Kafka has acknowledged every
line; a span phase when every request is answered (each answers after Kafka's ack). Each process
writes to topics of its own in the same Kafka (8 partitions); bytes on Kafka are the sizes of those
topics' log segments, so they include the record batches' framing and keys.

The peers are built once and cached under ~/.cache/tether/peers: bench/peers/build_otelcol.sh (the
Collector, with its own builder, from the Go module proxy) and bench/peers/build_rsyslog.sh
(rsyslog and omkafka from Debian's packages, extracted without installing). Their configurations
are in bench/peers/configs.py. Compression is zstd for all: the agent at its default level (-3,
zstd's fast mode) and again at level 3, the level both peers' Kafka clients use for zstd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import agent_bench
from agent_bench import AGENT_CORE, PARTITIONS, AgentUnderTest, free_port
from peers.configs import PEER_ZSTD_LEVEL, otelcol_config, rsyslog_config

from tests.e2e.otelcol_harness import prometheus_sum
from tether.agent.config import KafkaSinkConfig
from tether.stack import Stack
from tether.stack.kafka import delete_topics

PEERS_DIR = ROOT / "bench" / "peers"
PHASE_TIMEOUT_S = 600.0


def build(script: str) -> Path:
    """Runs a build script (a no-op once cached) and returns the path it prints."""
    began = time.perf_counter()
    done = subprocess.run([str(PEERS_DIR / script)], check=True, capture_output=True, text=True)
    took = time.perf_counter() - began
    if took > 5:
        print(f"[peers] {script} built in {took:.0f} s", file=sys.stderr)
    return Path(done.stdout.strip().splitlines()[-1])


class PeerUnderTest(AgentUnderTest):
    """A peer in the agent's place in agent_bench's phases: it answers the metric names those phases
    ask the agent for, and shares the agent's /proc readings (CPU, page faults, peak RSS) and stop."""

    label = "peer"

    def __init__(self, work: Path, bootstrap: str, files: bool, overrides: Sequence[str] = ()) -> None:
        if overrides:
            raise SystemExit("--set is for the agent's configuration only")
        run = uuid.uuid4().hex[:8]
        self.logs_topic = f"bench.{run}.{self.label}.logs"
        self.spans_topic = f"bench.{run}.{self.label}.spans"
        self.grpc_port, self.ops_port = free_port(), free_port()
        self.work, self.bootstrap, self.files = work, bootstrap, files
        self.include = f"{work}/logs/*.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.deadline = 0.0

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        argv, env = self.command()
        pin = (
            ["taskset", "-c", str(AGENT_CORE)]
            if shutil.which("taskset") and (os.cpu_count() or 1) > 1
            else []
        )
        self.process = subprocess.Popen(
            [*pin, *argv],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=(self.work / f"{self.label}.err").open("ab"),
        )
        self.deadline = time.monotonic() + PHASE_TIMEOUT_S
        started = time.monotonic() + 60
        while time.monotonic() < started:
            self.check_alive()
            if self.ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} did not start; see {self.work / f'{self.label}.err'}")

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.label} exited ({self.process.returncode}); see {self.label}.err")
        if time.monotonic() > self.deadline:
            raise RuntimeError(f"{self.label} took over {PHASE_TIMEOUT_S:.0f} s")

    def delivered_lines(self) -> float:
        raise NotImplementedError

    def received_spans(self) -> float:
        raise NotImplementedError

    def metric(self, name: str) -> float:
        self.check_alive()
        if name == "tether_agent_file_lines_total":
            return self.delivered_lines()
        if name == "tether_agent_checkpoint_lag_bytes":
            return 0.0  # delivered_lines already counts only what Kafka acknowledged
        if name == "tether_agent_otlp_received_total":
            return self.received_spans()
        raise KeyError(name)


class OtelcolUnderTest(PeerUnderTest):
    label = "otelcol"
    binary = Path("otelcol")

    def command(self) -> tuple[list[str], dict[str, str]]:
        config = otelcol_config(
            bootstrap=self.bootstrap,
            logs_topic=self.logs_topic,
            spans_topic=self.spans_topic,
            metrics_port=self.ops_port,
            include=self.include if self.files else None,
            grpc_endpoint=None if self.files else f"127.0.0.1:{self.grpc_port}",
        )
        path = self.work / f"otelcol-{self.logs_topic}.yaml"
        path.write_text(yaml.safe_dump(config))
        return [str(self.binary), "--config", f"file:{path}"], {}

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def ready(self) -> bool:
        try:
            self.scrape()
        except OSError:
            return False
        return True

    def _exported(self, signal: str) -> float:
        text = self.scrape()
        failed = prometheus_sum(text, f"otelcol_exporter_send_failed_{signal}")
        failed += prometheus_sum(text, f"otelcol_exporter_enqueue_failed_{signal}")
        if failed:
            raise RuntimeError(f"otelcol failed to send {failed:.0f} {signal}")
        return prometheus_sum(text, f"otelcol_exporter_sent_{signal}")

    def delivered_lines(self) -> float:
        return self._exported("log_records")

    def received_spans(self) -> float:
        return prometheus_sum(self.scrape(), "otelcol_receiver_accepted_spans")


class RsyslogUnderTest(PeerUnderTest):
    label = "rsyslog"
    root = Path("rsyslog")

    def command(self) -> tuple[list[str], dict[str, str]]:
        if not self.files:
            raise SystemExit("rsyslog takes no OTLP")
        state = self.work / f"rsyslog-state-{self.logs_topic}"
        state.mkdir()
        config = self.work / f"rsyslog-{self.logs_topic}.conf"
        config.write_text(
            rsyslog_config(
                bootstrap=self.bootstrap, topic=self.logs_topic, include=self.include, state_dir=state
            )
        )
        self.pid_file = state / "rsyslogd.pid"
        libs = self.root / "usr/lib/x86_64-linux-gnu"
        argv = [str(self.root / "usr/sbin/rsyslogd"), "-n", "-f", str(config), "-i", str(self.pid_file)]
        return [*argv, "-M", str(libs / "rsyslog")], {"LD_LIBRARY_PATH": str(libs)}

    def ready(self) -> bool:
        if not self.pid_file.exists():
            return False
        # rsyslog has no metrics endpoint: what Kafka acknowledged is read from the topic's
        # high watermarks (one record a line; the producer is idempotent, so none twice).
        self.loop = asyncio.new_event_loop()
        self.consumer = self.loop.run_until_complete(self._open_consumer())
        self.partitions = [TopicPartition(self.logs_topic, p) for p in range(PARTITIONS)]
        return True

    async def _open_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        return consumer

    def delivered_lines(self) -> float:
        offsets = self.loop.run_until_complete(self.consumer.end_offsets(self.partitions))
        return float(sum(offsets.values()))

    def stop(self) -> None:
        super().stop()
        if getattr(self, "consumer", None) is not None:
            self.loop.run_until_complete(self.consumer.stop())
            self.loop.close()


@contextlib.contextmanager
def in_agents_place(factory: Callable[..., AgentUnderTest], started: list[AgentUnderTest]) -> Iterator[None]:
    """agent_bench's phases build `AgentUnderTest`; for a peer's phase they build `factory`'s instead,
    so the peer sees the same lines, clock, core and readings. `started` collects each one made."""

    def make(*args: Any, **kwargs: Any) -> AgentUnderTest:
        process = factory(*args, **kwargs)
        started.append(process)
        return process

    original = agent_bench.AgentUnderTest
    agent_bench.AgentUnderTest = make  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        agent_bench.AgentUnderTest = original  # type: ignore[misc]


def topic_bytes(data_dir: Path, topic: str) -> int:
    """Bytes of the topic's log segments on the broker: what Kafka stores (times replication)."""
    return sum(segment.stat().st_size for segment in data_dir.glob(f"{topic}-*/*.log"))


def run_phase(
    name: str,
    runner: Callable[[], dict[str, float]],
    factory: Callable[..., AgentUnderTest],
    stack: Stack,
    topic_of: Callable[[AgentUnderTest], str],
    count_key: str,
    keep_topics: bool,
) -> dict[str, float]:
    made: list[AgentUnderTest] = []
    with in_agents_place(factory, made):
        figures = runner()
    time.sleep(1)  # the broker's appends are in its segments before the sizes are read
    measured = topic_bytes(stack.kafka.home / "data", topic_of(made[-1]))
    figures["kafka_bytes_per_item"] = measured / figures[count_key]
    if not keep_topics:
        asyncio.run(delete_topics(stack.kafka.bootstrap, [made[-1].logs_topic, made[-1].spans_topic]))
    print(f"[peers] {name}: " + fmt(figures), file=sys.stderr)
    return figures


def fmt(figures: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:,.{2 if abs(v) < 10 else 1}f}" for k, v in figures.items())


RATIOS = {
    "lines_per_s": "speed",
    "spans_per_s": "speed",
    "cpu_s_per_million": "CPU/item",
    "peak_rss_mb": "RSS",
    "kafka_bytes_per_item": "Kafka B/item",
}


def ratios(figures: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    return {label: figures[key] / baseline[key] for key, label in RATIOS.items() if key in figures}


def versions(otelcol: Path, rsyslog_root: Path) -> dict[str, str]:
    otel = subprocess.run([str(otelcol), "--version"], capture_output=True, text=True).stdout.strip()
    packages = (rsyslog_root / "PACKAGES").read_text().split("\n")
    return {
        "otelcol": otel,
        "rsyslog": "; ".join(p.replace("Package: ", "").replace(" Version:", "") for p in packages if p),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--spans", type=int, default=262_144)
    parser.add_argument("--spans-per-request", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=16, help="OTLP requests in flight")
    parser.add_argument("--json", type=Path, help="also write the figures there")
    parser.add_argument("--keep-topics", action="store_true", help="leave each phase's topics in Kafka")
    args = parser.parse_args()

    OtelcolUnderTest.binary = build("build_otelcol.sh")
    RsyslogUnderTest.root = build("build_rsyslog.sh")
    stack = Stack()
    if any(pid is None for _, pid, _, _ in stack.status()):
        stack.up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))

    def configured(*overrides: str) -> Callable[..., AgentUnderTest]:
        def make(*a: Any, **k: Any) -> AgentUnderTest:
            return AgentUnderTest(*a, **{**k, "overrides": [*k.get("overrides", ()), *overrides]})

        return make

    zstd3_agent = configured(f"kafka.zstd_level={PEER_ZSTD_LEVEL}")
    files = {
        "agent": AgentUnderTest,
        # the defaults before issue 15: whole lines as bodies, zstd -3 (the CPU per line to stay under)
        "agent before": configured("files.original_body=true", "kafka.zstd_level=-3"),
        f"agent zstd {PEER_ZSTD_LEVEL}": zstd3_agent,
        "otelcol": OtelcolUnderTest,
        "rsyslog": RsyslogUnderTest,
    }
    spans = {
        "agent": AgentUnderTest,
        f"agent zstd {PEER_ZSTD_LEVEL}": zstd3_agent,
        "otelcol": OtelcolUnderTest,
    }
    results: dict[str, dict[str, dict[str, float]]] = {"file_to_kafka": {}, "otlp_spans_to_kafka": {}}
    with tempfile.TemporaryDirectory(prefix="tether-peers-") as tmp:
        work = Path(tmp)
        if args.lines:
            for name, factory in files.items():
                results["file_to_kafka"][name] = run_phase(
                    f"file -> Kafka, {name}",
                    lambda: agent_bench.bench_file(stack, work, args.lines),
                    factory,
                    stack,
                    lambda process: process.logs_topic,
                    "lines",
                    args.keep_topics,
                )
        if args.spans:
            for name, factory in spans.items():
                results["otlp_spans_to_kafka"][name] = run_phase(
                    f"OTLP spans -> Kafka, {name}",
                    lambda: agent_bench.bench_otlp(
                        stack, work, args.spans, args.spans_per_request, args.concurrency
                    ),
                    factory,
                    stack,
                    lambda process: process.spans_topic,
                    "spans",
                    args.keep_topics,
                )
    found = versions(OtelcolUnderTest.binary, RsyslogUnderTest.root)
    print(f"cpu={os.cpu_count()} python={sys.version.split()[0]}")
    level = PEER_ZSTD_LEVEL
    default = KafkaSinkConfig(bootstrap_servers="-").zstd_level
    print(
        f"compression: zstd, the agent at its default ({default}) and at {level}, the peers at {level};"
        " 'agent before': whole lines as bodies at zstd -3, the defaults before issue 15"
    )
    for name, version in found.items():
        print(f"{name}: {version}")
    for phase, runs in results.items():
        if not runs:
            continue
        print(f"\n{phase}")
        baseline = runs["agent"]
        for name, figures in runs.items():
            print(f"  {name:14} {fmt(figures)}")
            print(f"  {'':14} of the agent: " + fmt(ratios(figures, baseline)))
    if args.json:
        args.json.write_text(json.dumps({"versions": found, "results": results}, indent=2))


if __name__ == "__main__":
    main()
