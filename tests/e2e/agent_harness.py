"""Running a real `tether agent` process against the real Kafka, and reading back what it produced."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tether.schemas.records import (
    ATTR_AGENT_ID,
    ATTR_FILE_FINGERPRINT,
    ATTR_FILE_PATH,
    ATTR_RECORD_OFFSET,
    record_id,
)
from tether.stack import Stack
from tether.stack.kafka import ensure_topics

PARTITIONS = 8

# What `notable` keeps of a process's JSON log lines (besides every non-JSON line).
_NOTABLE = (
    '"warning"',
    '"error"',
    '"critical"',
    "started",
    "stopped",
    "tailing",
    "spool",
    "copy",
    "truncated",
    "renamed",
    "released",
    "connected to Kafka",
    "partitions assigned",
    "partitions revoked",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TetherProcess:
    """A real `tether agent|collector` process: start it, kill -9 it, stop it, read its output and
    its ops endpoint. Subclasses set kind, config, output and ops_port."""

    kind: str
    config: Path
    output: Path
    ops_port: int
    env: dict[str, str] | None = None  # added to the environment, e.g. for ${VAR} in the config
    process: subprocess.Popen[bytes] | None = None
    # Every process started in this test session, so a failing test leaves none behind.
    launched: ClassVar[list[subprocess.Popen[bytes]]] = []

    def __init__(
        self, kind: str, config: Path, output: Path, ops_port: int, env: dict[str, str] | None = None
    ):
        self.kind, self.config, self.output, self.ops_port, self.env = kind, config, output, ops_port, env

    def launch(self) -> None:
        tether = Path(sys.executable).with_name("tether")
        env = {**os.environ, **self.env} if self.env else None
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(
                [str(tether), self.kind, "--config", str(self.config)], stdout=out, stderr=out, env=env
            )
        TetherProcess.launched.append(self.process)

    def wait_listening(self, *ports: int, within: float = 60) -> None:
        """Until the process accepts connections on every port; fails at once if it exits."""
        assert self.process is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.kind} exited with {self.process.returncode}:\n{self.tail()}")
            if all(_listening(port) for port in ports):
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.kind} did not start listening on {ports}:\n{self.tail()}")

    @classmethod
    def reap(cls) -> None:
        """Kill whatever a test started and did not stop (it failed before it could)."""
        for process in cls.launched:
            if process.poll() is None:
                process.kill()
                process.wait()
        cls.launched.clear()

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        """SIGTERM, and the exit status (a graceful stop is 0)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise AssertionError(f"{self.kind} ignored SIGTERM:\n{self.tail()}") from None
        return self.process.returncode

    def tail(self, chars: int = 4000) -> str:
        return self.output.read_text(errors="replace")[-chars:] if self.output.exists() else ""

    def notable(self, chars: int = 12000) -> str:
        """The output lines that tell what happened to the data across restarts (starts, files taken
        up, spooling, warnings, errors, anything not a JSON log line such as a traceback), the
        latest `chars` of them: a tail alone shows only the last start, and the tmp dir is gone by
        the time a flaky failure is read."""
        if not self.output.exists():
            return ""
        keep = []
        for line in self.output.read_text(errors="replace").splitlines():
            if not line.startswith("{") or any(word in line for word in _NOTABLE):
                keep.append(line[:600])
        return "\n".join(keep)[-chars:]

    def get(self, path: str) -> tuple[int, bytes]:
        """GET a path of the ops endpoint: (status, body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}{path}", timeout=5) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read()

    def samples(self) -> dict[str, float]:
        """Every sample of /metrics by its full name, labels included; {} while it does not answer."""
        try:
            text = self.get("/metrics")[1].decode()
        except OSError:
            return {}
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples


@dataclass
class AgentProcess(TetherProcess):
    """One agent: its config, state directory and ports; start/kill/stop it as a real process."""

    stack: Stack
    root: Path
    extra_config: str = ""
    otlp_options: str = ""  # more keys of the otlp section, e.g. 'bearer_token: "x"'

    def __post_init__(self) -> None:
        run = uuid.uuid4().hex[:10]
        self.logs_topic, self.spans_topic = f"agent.{run}.logs", f"agent.{run}.spans"
        self.agent_id = f"agent-{run}"  # its lines' documents carry it (tether.agent_id)
        self.grpc_port, self.http_port, self.ops_port = free_port(), free_port(), free_port()
        self.log_dir = self.root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.output = self.root / "agent.out"
        self.config = self.root / "agent.yaml"
        self.kind = "agent"
        self.config.write_text(
            f"""
agent_id: {self.agent_id}
data_dir: {self.root / "state"}
shutdown_grace_seconds: 20
kafka: {{bootstrap_servers: "{self.stack.kafka.bootstrap}", logs_topic: {self.logs_topic},
        spans_topic: {self.spans_topic}, request_timeout_ms: 5000}}
otlp: {{grpc_endpoint: "127.0.0.1:{self.grpc_port}", http_endpoint: "127.0.0.1:{self.http_port}",
       {self.otlp_options}}}
ops: {{endpoint: "127.0.0.1:{self.ops_port}"}}
{self.extra_config}
"""
        )
        self.process = None

    async def create_topics(self) -> None:
        await ensure_topics(self.stack.kafka.bootstrap, [self.logs_topic, self.spans_topic], PARTITIONS)

    def start(self) -> None:
        self.launch()
        self.wait_listening(self.grpc_port, self.ops_port)

    def metrics(self) -> dict[str, float]:
        """The samples summed by metric name (labels folded)."""
        totals: dict[str, float] = {}
        for name, value in self.samples().items():
            key = name.split("{", 1)[0]
            totals[key] = totals.get(key, 0.0) + value
        return totals


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def consume_all(bootstrap: str, topic: str, idle_seconds: float = 3.0) -> list[tuple[int, bytes]]:
    """Every record of `topic` as (partition, value), reading until nothing new for `idle_seconds`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[tuple[int, bytes]] = []
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_seconds:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                records.extend((tp.partition, m.value) for m in messages)
                idle_since = time.monotonic()
        return records
    finally:
        await consumer.stop()


def log_records(records: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
    """Decoded log records: body, record id (as the collector makes it), attributes, trace id,
    partition, and the file's path (the scope's)."""
    out = []
    for partition, value in records:
        request = ExportLogsServiceRequest.FromString(value)
        for resource_logs in request.resource_logs:
            resource = {kv.key: kv.value.string_value for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                scope = {kv.key: kv.value.string_value for kv in scope_logs.scope.attributes}
                for record in scope_logs.log_records:
                    attributes = {kv.key: kv.value for kv in record.attributes}
                    offset = attributes.get(ATTR_RECORD_OFFSET)
                    out.append(
                        {
                            "body": record.body.string_value,
                            "id": record_id(
                                resource[ATTR_AGENT_ID], scope[ATTR_FILE_FINGERPRINT], offset.int_value
                            )
                            if offset is not None
                            else "",
                            "attributes": attributes,
                            "trace_id": record.trace_id,
                            "partition": partition,
                            "path": scope.get(ATTR_FILE_PATH, ""),
                        }
                    )
    return out


def span_ids(records: list[tuple[int, bytes]]) -> list[bytes]:
    return [
        span.span_id
        for _, value in records
        for rs in ExportTraceServiceRequest.FromString(value).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


async def wait_until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


class Writer(threading.Thread):
    """Appends numbered JSON lines at a steady pace; can rotate the file between two writes."""

    def __init__(self, path: Path, total: int, per_second: int) -> None:
        super().__init__(daemon=True)
        self.path, self.total, self.interval = path, total, 1.0 / per_second
        self.rotations: dict[int, str] = {}  # after line n: "rename" or "copytruncate"
        self.written = 0

    def run(self) -> None:
        handle = self.path.open("a")
        for n in range(self.total):
            trace_id = os.urandom(16).hex()
            line = {
                "@timestamp": time.time(),
                "level": "info",
                "service": "writer",
                "trace_id": trace_id,
                "message": f"line {n}",
                "seq": n,
                "padding": "x" * 200,
            }
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            self.written = n + 1
            rotation = self.rotations.get(n)
            if rotation == "rename":  # logrotate's default: rename, then the app reopens a new file
                handle.close()
                self.path.rename(self.path.with_name(self.path.name + ".1"))
                handle = self.path.open("a")
            elif rotation == "copytruncate":  # the app keeps its handle; the file is copied and emptied
                shutil.copyfile(self.path, self.path.with_name(self.path.name + ".2"))
                os.truncate(self.path, 0)
            time.sleep(self.interval)
        handle.close()
