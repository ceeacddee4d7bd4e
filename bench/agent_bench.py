"""Agent benchmark: file -> Kafka and OTLP/gRPC spans -> Kafka, into the real local Kafka.

    .venv/bin/python bench/agent_bench.py --lines 1000000 --spans 500000

Starts `tether stack up` if needed. The agent runs as its own process pinned to one core
(taskset -c 1). During the timed phases the stack's servers (Kafka, Elasticsearch, Jaeger) and
the load generator are kept off that core (`--shared-core`: not), so the figures are the agent's
own core; the ceilings run pinned to the agent's core. Reports lines/s, MB/s, agent CPU seconds
per million records, and the agent's peak RSS. In the same run, ceilings: the raw aiokafka
producer sending the agent's own pre-encoded records (the Kafka client's limit on this machine),
and orjson parsing the same lines (the JSON parser's limit).

`--cri` also runs the file phase on the same lines as a Kubernetes node holds them: each wrapped
in the CRI prefix containerd writes (`<time> stdout F <line>`), in a file at a kubelet path
(`pods/<namespace>_<pod>_<uid>/<container>/0.log`), and prints its rate relative to the plain run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tether.agent.config import KafkaSinkConfig
from tether.agent.encode import FileLine, encode_file_lines
from tether.agent.parse import parse_line
from tether.agent.sinks import kafka_batch
from tether.schemas.log_fields import default_mapping
from tether.stack import Stack
from tether.stack.kafka import delete_topics, ensure_topics

PARTITIONS = 8
AGENT_CORE = 1
SERVICES = ["checkout", "payments", "cart", "search", "auth", "inventory"]
MESSAGES = [
    "order placed",
    "payment authorised",
    "cache miss for key",
    "user signed in",
    "inventory reserved",
    "request completed",
    "retrying upstream call",
    "slow query",
]


def realistic_line(n: int, rng: random.Random) -> bytes:
    """~300 B: the issue's format, with a trace id on 95 % of lines."""
    line = {
        "@timestamp": f"2026-11-21T10:{(n // 60000) % 60:02d}:{(n // 1000) % 60:02d}.{n % 1000:03d}123Z",
        "level": rng.choice(("info", "info", "info", "warn", "error", "debug")),
        "service": rng.choice(SERVICES),
        "message": f"{rng.choice(MESSAGES)} id={n} attempt={n % 3}",
        "data": {
            "user": f"u-{rng.randrange(10**6)}",
            "region": "eu-west-1",
            "latency_ms": rng.randrange(500),
            "path": "/api/v1/orders",
        },
    }
    if rng.random() < 0.95:
        line["trace_id"] = rng.randbytes(16).hex()
        line["span_id"] = rng.randbytes(8).hex()
    return orjson.dumps(line)


def bench_compression() -> tuple[str, int]:
    """The agent's default codec and level, or BENCH_COMPRESSION / BENCH_ZSTD_LEVEL / BENCH_LZ4_LEVEL."""
    defaults = KafkaSinkConfig(bootstrap_servers="-")
    codec = os.environ.get("BENCH_COMPRESSION", defaults.compression)
    if codec == "lz4":
        return codec, int(os.environ.get("BENCH_LZ4_LEVEL", defaults.lz4_level))
    return codec, int(os.environ.get("BENCH_ZSTD_LEVEL", defaults.zstd_level))


def apply_override(config: dict[str, Any], override: str) -> None:
    """`section.key=value` (the value read as YAML) into the agent's configuration."""
    path, sep, raw = override.partition("=")
    if not sep or not path:
        raise SystemExit(f"--set wants section.key=value, not {override!r}")
    *parents, key = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[key] = yaml.safe_load(raw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session_threads(leader: int) -> list[int]:
    """Every thread of every process in `leader`'s session (a stack server leads its own session;
    Elasticsearch's controller is a child process)."""
    threads = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) != leader:
                continue
            threads += [int(task.name) for task in (proc / "task").iterdir()]
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return threads


@contextlib.contextmanager
def off_agent_core(stack: Stack, enabled: bool) -> Iterator[None]:
    """During a timed phase keep the stack's servers (Kafka, Elasticsearch, Jaeger) and this process
    (the load generator) off the agent's core, so the agent's figures are its own core's; every
    previous affinity is restored afterwards. Other processes on the machine are left alone."""
    cores = os.sched_getaffinity(0)
    if not enabled or AGENT_CORE not in cores or len(cores) < 2:
        yield
        return
    others = cores - {AGENT_CORE}
    saved: dict[int, set[int]] = {}
    leaders = [pid for _, pid, _, _ in stack.status() if pid is not None]
    try:
        for tid in [0] + [t for leader in leaders for t in _session_threads(leader)]:
            try:
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, saved[tid] - {AGENT_CORE} or others)
            except OSError:
                saved.pop(tid, None)  # a thread that ended meanwhile
        yield
    finally:
        for tid, previous in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, previous)


# A kubelet log path under the bench's directory: the agent adds the pod's k8s.* attributes.
CRI_LOG = Path("pods/bench_bench-app-0_00000000-0000-4000-8000-000000000000/app/0.log")


def cri_wrapped(line: bytes, n: int) -> bytes:
    """`line` as containerd's CRI logger writes a line printed to stdout (a whole line: F)."""
    return b"2026-11-21T10:%02d:%02d.%09dZ stdout F " % ((n // 60000) % 60, (n // 1000) % 60, n) + line


class AgentUnderTest:
    def __init__(self, work: Path, bootstrap: str, files: bool, overrides: Sequence[str] = ()) -> None:
        run = uuid.uuid4().hex[:8]
        self.logs_topic, self.spans_topic = f"bench.{run}.logs", f"bench.{run}.spans"
        self.grpc_port, self.ops_port = free_port(), free_port()
        self.work = work
        codec, level = bench_compression()
        config: dict[str, Any] = {
            "agent_id": "bench",
            "data_dir": str(work / f"state-{run}"),
            "log_level": "warning",
            "kafka": {
                "bootstrap_servers": bootstrap,
                "logs_topic": self.logs_topic,
                "spans_topic": self.spans_topic,
                "compression": codec,
                "lz4_level" if codec == "lz4" else "zstd_level": level,
            },
            "otlp": {"grpc_endpoint": f"127.0.0.1:{self.grpc_port}", "http_endpoint": None},
            "ops": {"endpoint": f"127.0.0.1:{self.ops_port}"},
        }
        if files:
            config["files"] = {
                "include": [f"{work}/logs/*.log", f"{work}/{CRI_LOG.parent}/*.log"],
                "poll_interval_seconds": 0.05,
            }
            if chunk := os.environ.get("BENCH_READ_CHUNK_BYTES"):
                config["files"]["read_chunk_bytes"] = int(chunk)
        for override in overrides:
            apply_override(config, override)
        self.config = work / f"agent-{run}.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        tether = str(Path(sys.executable).with_name("tether"))
        pin = (
            ["taskset", "-c", str(AGENT_CORE)]
            if shutil.which("taskset") and (os.cpu_count() or 1) > 1
            else []
        )
        self.process = subprocess.Popen(
            [*pin, tether, "agent", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=(self.work / "agent.err").open("ab"),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.metric("tether_agent_file_lines_total")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("agent did not start; see " + str(self.work / "agent.err"))

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}/metrics", timeout=5) as response:
            total = 0.0
            for line in response.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    total += float(line.rsplit(" ", 1)[1])
            return total

    def _stat(self) -> list[str]:
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()

    def cpu_seconds(self) -> float:
        fields = self._stat()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sys_seconds_and_faults(self) -> tuple[float, int]:
        """Kernel CPU time and minor page faults: memory freshly mapped per chunk shows here."""
        fields = self._stat()
        return int(fields[12]) / os.sysconf("SC_CLK_TCK"), int(fields[7])

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


def bench_file(
    stack: Stack,
    work: Path,
    lines: int,
    profile: str | None = None,
    fair: bool = True,
    overrides: Sequence[str] = (),
    cri: bool = False,
) -> dict[str, float]:
    """Lines written to a file, read by the agent into Kafka; `cri`: each line wrapped as
    containerd writes it, at a kubelet path."""
    rng = random.Random(42)
    path = work / CRI_LOG if cri else work / "logs" / "app.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for n in range(lines):
            line = realistic_line(n, rng)
            handle.write((cri_wrapped(line, n) if cri else line) + b"\n")
    size = path.stat().st_size
    agent = AgentUnderTest(work, stack.kafka.bootstrap, files=True, overrides=overrides)
    asyncio.run(ensure_topics(stack.kafka.bootstrap, [agent.logs_topic, agent.spans_topic], PARTITIONS))
    hold = work / "app.log.hold"
    path.rename(hold)  # start the clock when the agent sees the file
    agent.start()
    profiler = None
    if profile:
        assert agent.process is not None
        spy = str(Path(sys.executable).with_name("py-spy"))
        # --native (C and Rust frames too) pauses the agent per sample: rates are lower
        command = [spy, "record", "--native", "-r", "100", "-f", "speedscope", "-o", profile]
        profiler = subprocess.Popen(
            [*command, "--pid", str(agent.process.pid)],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1)
    with off_agent_core(stack, fair):
        cpu0 = agent.cpu_seconds()
        sys0, faults0 = agent.sys_seconds_and_faults()
        began = time.perf_counter()
        hold.rename(path)
        while (
            agent.metric("tether_agent_file_lines_total") < lines
            or agent.metric("tether_agent_checkpoint_lag_bytes") > 0
        ):
            time.sleep(0.05)
        elapsed = time.perf_counter() - began
        cpu = agent.cpu_seconds() - cpu0
        sys1, faults1 = agent.sys_seconds_and_faults()
    rss = agent.peak_rss_mb()
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)
    agent.stop()
    asyncio.run(delete_topics(stack.kafka.bootstrap, [agent.logs_topic, agent.spans_topic]))
    path.unlink()
    return {
        "lines": lines,
        "seconds": elapsed,
        "lines_per_s": lines / elapsed,
        "mb_per_s": size / elapsed / 1e6,
        "cpu_s_per_million": cpu / lines * 1e6,
        "core_busy": cpu / elapsed,  # the share of its one core the agent used: below 1, it waited
        "of_it_kernel_s": (sys1 - sys0) / lines * 1e6,
        "page_faults_per_mb": (faults1 - faults0) / (size / 1e6),
        "peak_rss_mb": rss,
        "avg_line_bytes": size / lines,
    }


def bench_otlp(
    stack: Stack,
    work: Path,
    spans: int,
    per_request: int = 500,
    concurrency: int = 8,
    fair: bool = True,
    overrides: Sequence[str] = (),
) -> dict[str, float]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    rng = random.Random(7)
    bodies = []
    for _ in range(32):  # distinct requests, reused round-robin
        span_list = []
        for _ in range(per_request):
            start = 1_763_700_000_000_000_000 + rng.randrange(10**12)
            span_list.append(
                Span(
                    trace_id=rng.randbytes(16),
                    span_id=rng.randbytes(8),
                    parent_span_id=rng.randbytes(8),
                    name="GET /api/v1/orders",
                    kind=Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + rng.randrange(10**8),
                    attributes=[
                        KeyValue(key="http.method", value=AnyValue(string_value="GET")),
                        KeyValue(key="http.status_code", value=AnyValue(int_value=200)),
                    ],
                )
            )
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(
                        attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))]
                    ),
                    scope_spans=[ScopeSpans(spans=span_list)],
                )
            ]
        )
        bodies.append(request.SerializeToString())
    agent = AgentUnderTest(work, stack.kafka.bootstrap, files=False, overrides=overrides)
    asyncio.run(ensure_topics(stack.kafka.bootstrap, [agent.logs_topic, agent.spans_topic], PARTITIONS))
    agent.start()
    requests = spans // per_request
    with off_agent_core(stack, fair):
        cpu0 = agent.cpu_seconds()
        elapsed = asyncio.run(_send_otlp(f"127.0.0.1:{agent.grpc_port}", bodies, requests, concurrency))
        cpu = agent.cpu_seconds() - cpu0
    rss = agent.peak_rss_mb()
    received = agent.metric("tether_agent_otlp_received_total")
    agent.stop()
    asyncio.run(delete_topics(stack.kafka.bootstrap, [agent.logs_topic, agent.spans_topic]))
    sent = requests * per_request
    assert received == sent, (received, sent)
    return {
        "spans": sent,
        "seconds": elapsed,
        "spans_per_s": sent / elapsed,
        "mb_per_s": sum(len(b) for b in bodies) / len(bodies) * requests / elapsed / 1e6,
        "cpu_s_per_million": cpu / sent * 1e6,
        "core_busy": cpu / elapsed,
        "peak_rss_mb": rss,
    }


async def _send_otlp(target: str, bodies: list[bytes], requests: int, concurrency: int) -> float:
    import grpc

    async with grpc.aio.insecure_channel(target) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        counter = iter(range(requests))

        async def worker() -> None:
            for n in counter:
                await export(bodies[n % len(bodies)], timeout=60)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began


def ceiling_producer(stack: Stack, lines: int) -> dict[str, float]:
    """The raw aiokafka producer sending the agent's own encoded records: what Kafka takes from Python
    (with the agent's record batch builder and zstd level)."""
    rng = random.Random(42)
    mapping = default_mapping()
    chunk = [FileLine(parse_line(realistic_line(n, rng), mapping), n) for n in range(2000)]
    records = encode_file_lines(
        chunk,
        path="/bench/app.log",
        fingerprint="fp",
        agent_id="bench",
        observed_ns=time.time_ns(),
        partitions=PARTITIONS,
        untraced_partition=0,
    )
    topic = f"bench.{uuid.uuid4().hex[:8]}.ceiling"
    asyncio.run(ensure_topics(stack.kafka.bootstrap, [topic], PARTITIONS))

    codec, level = bench_compression()

    async def produce() -> float:
        producer = AIOKafkaProducer(
            bootstrap_servers=stack.kafka.bootstrap,
            acks="all",
            enable_idempotence=True,
            compression_type=codec,
            linger_ms=10,
            max_batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        # the agent's batch builder and level, so that "same compression" holds
        kafka_batch.install(producer, codec, level)
        await producer.start()
        began = time.perf_counter()
        in_flight: list[asyncio.Future[object]] = []
        for _ in range(lines // len(chunk)):
            in_flight.extend([await producer.send(topic, value, partition=p) for p, value in records.items()])
            if len(in_flight) >= 64:  # keep Kafka busy, as the agent's delivery does
                await asyncio.gather(*in_flight)
                in_flight.clear()
        await asyncio.gather(*in_flight)
        elapsed = time.perf_counter() - began
        await producer.stop()
        return elapsed

    elapsed = asyncio.run(produce())
    asyncio.run(delete_topics(stack.kafka.bootstrap, [topic]))
    sent = lines // len(chunk) * len(chunk)
    return {"lines_per_s": sent / elapsed}


def ceiling_orjson(lines: int) -> dict[str, float]:
    rng = random.Random(42)
    data = [realistic_line(n, rng) for n in range(min(lines, 200_000))]
    began = time.perf_counter()
    for line in data:
        orjson.loads(line)
    return {"lines_per_s": len(data) / (time.perf_counter() - began)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--spans", type=int, default=500_000)
    parser.add_argument("--spans-per-request", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8, help="OTLP requests in flight")
    parser.add_argument("--no-ceilings", action="store_true", help="skip the ceiling measurements")
    parser.add_argument(
        "--cri",
        action="store_true",
        help="also read the same lines CRI-wrapped (as containerd writes them, at a kubelet path)",
    )
    parser.add_argument(
        "--shared-core",
        action="store_true",
        help="leave Kafka, Elasticsearch, Jaeger and the load generator free to run on the agent's core "
        "(the figures before the bench kept them off it)",
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="record the file run with py-spy (speedscope format) into FILE"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override the agent's configuration, e.g. --set spool.max_in_flight_bytes=33554432",
    )
    args = parser.parse_args()
    stack = Stack()
    # Only when something is down: provisioning a running Elasticsearch walks its live data
    # directory, which races with whatever is indexing into it (FileNotFoundError).
    if any(pid is None for _, pid, _, _ in stack.status()):
        stack.up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        work = Path(tmp)
        results: dict[str, dict[str, float]] = {}
        if args.lines:
            results["file_to_kafka"] = bench_file(
                stack, work, args.lines, args.profile, fair=not args.shared_core, overrides=args.set
            )
            if args.cri:
                cri = bench_file(
                    stack, work, args.lines, fair=not args.shared_core, overrides=args.set, cri=True
                )
                cri["of_plain_lines_per_s"] = cri["lines_per_s"] / results["file_to_kafka"]["lines_per_s"]
                results["file_to_kafka_cri_wrapped"] = cri
        if args.spans:
            results["otlp_spans_to_kafka"] = bench_otlp(
                stack,
                work,
                args.spans,
                args.spans_per_request,
                args.concurrency,
                fair=not args.shared_core,
                overrides=args.set,
            )
        if not args.no_ceilings:
            # The ceilings get the same single core as the agent.
            previous = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {1} if len(previous) > 1 else previous)
            try:
                results["ceiling_raw_producer_same_records"] = ceiling_producer(stack, args.lines)
                results["ceiling_orjson_parse_only"] = ceiling_orjson(args.lines)
            finally:
                os.sched_setaffinity(0, previous)
    codec, level = bench_compression()
    core = "shared with the stack" if args.shared_core else "the stack and load generator kept off it"
    print(f"compression={codec} level={level} cpu={os.cpu_count()} python={sys.version.split()[0]}")
    print(f"agent core: {core}")
    for name, figures in results.items():
        print(f"{name:36} " + "  ".join(f"{k}={v:,.{2 if abs(v) < 10 else 1}f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
