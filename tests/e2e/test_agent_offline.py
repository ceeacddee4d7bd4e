"""An agent started while Kafka is unreachable: it listens at once, spools, and drains once Kafka answers.

Kafka is made unreachable without stopping the shared broker: the agent's kafka.bootstrap_servers
is a port of this test's own TCP proxy, which refuses connections (nothing listens) at first and
later forwards to the real broker. A proxy only gates the bootstrap: the broker advertises its
own address in the metadata, and the client then talks to it directly. That is what "Kafka comes
back" looks like to an agent that started without it.

The agent remembers 3 partitions from an earlier run while the topics have 8: what it spooled,
split for 3, must reach Kafka split for 8, a trace's logs and spans in one partition number.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.e2e.agent_harness import PARTITIONS, AgentProcess, consume_all, free_port, log_records, wait_until
from tether.agent.partition_memory import PartitionMemory
from tether.schemas.records import partition_for_trace
from tether.stack import Stack

pytestmark = pytest.mark.stack

LINES = 400
SPANS = 40


class KafkaProxy:
    """Refuses connections (nothing listens on `port`) until `open()`, then forwards to `target`."""

    def __init__(self, target: str) -> None:
        self.port = free_port()
        self.target_host, _, target_port = target.rpartition(":")
        self.target_port = int(target_port)
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        broker_reader, broker_writer = await asyncio.open_connection(self.target_host, self.target_port)
        await asyncio.gather(
            _pipe(client_reader, broker_writer), _pipe(broker_reader, client_writer), return_exceptions=True
        )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def _send_spans(endpoint: str, count: int) -> list[tuple[bytes, bytes]]:
    """Spans through the SDK's own OTLP/gRPC exporter, one export each: (trace id, span id)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "offline"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30))
    )
    tracer = provider.get_tracer("tether.offline")
    sent = []
    for n in range(count):
        with tracer.start_as_current_span(f"while Kafka is away {n}") as span:
            context = span.get_span_context()
            sent.append((context.trace_id.to_bytes(16, "big"), context.span_id.to_bytes(8, "big")))
    provider.shutdown()
    return sent


def _spans(records: list[tuple[int, bytes]]) -> list[tuple[int, bytes, bytes]]:
    """(partition, trace id, span id) of every span in the records."""
    return [
        (partition, span.trace_id, span.span_id)
        for partition, value in records
        for rs in ExportTraceServiceRequest.FromString(value).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


async def test_an_agent_started_without_kafka_accepts_then_drains_exactly_once(
    stack: Stack, tmp_path: Path
) -> None:
    proxy = KafkaProxy(stack.kafka.bootstrap)
    agent = AgentProcess(
        stack,
        tmp_path,
        extra_config=(
            f'files: {{include: ["{tmp_path}/logs/*.log"], poll_interval_seconds: 0.1}}\n'
            "spool: {spill_after_seconds: 2, fsync: always}"
        ),
    )
    bootstrap = f"127.0.0.1:{proxy.port}"
    agent.config.write_text(agent.config.read_text().replace(stack.kafka.bootstrap, bootstrap))
    await agent.create_topics()
    memory = PartitionMemory(tmp_path / "state", agent.logs_topic, agent.spans_topic)
    memory.remember(3)  # an earlier run's count; the topics have PARTITIONS

    launched = time.monotonic()
    agent.start()  # returns once the OTLP gRPC port and the ops port accept connections
    listening_after = time.monotonic() - launched
    try:
        assert listening_after < 5, f"listening only after {listening_after:.1f}s"
        assert agent.get("/healthz")[0] == 200
        status, body = agent.get("/readyz")
        assert status == 503 and f"kafka.bootstrap_servers={bootstrap}" in json.loads(body)["reason"]

        spans = await asyncio.to_thread(_send_spans, f"127.0.0.1:{agent.grpc_port}", SPANS)
        with (agent.log_dir / "app.log").open("w") as log_file:
            for n in range(LINES):
                trace_id, span_id = spans[n % SPANS]
                line = {"level": "info", "message": f"line {n}", "seq": n, "trace_id": trace_id.hex()}
                log_file.write(json.dumps({**line, "span_id": span_id.hex()}) + "\n")
        await wait_until(
            lambda: agent.metrics().get("tether_agent_file_lines_total", 0) == LINES, 30, "lines read"
        )
        during = agent.metrics()
        assert during["tether_agent_spool_batches"] > 0 and during["tether_agent_kafka_connected"] == 0
        assert await consume_all(stack.kafka.bootstrap, agent.logs_topic, idle_seconds=1) == []
        assert proxy.connections == 0  # nothing reached Kafka: it was unreachable

        await proxy.open()  # Kafka answers
        await wait_until(lambda: agent.get("/readyz")[0] == 200, 90, "the agent to reach Kafka")
        await wait_until(
            lambda: agent.metrics().get("tether_agent_spool_bytes", 1) == 0, 60, "the spool to drain"
        )
        assert agent.metrics()["tether_agent_kafka_connected"] == 1
        log_values = await consume_all(stack.kafka.bootstrap, agent.logs_topic)
        logs = log_records(log_values)
        delivered_spans = _spans(await consume_all(stack.kafka.bootstrap, agent.spans_topic))
        assert agent.stop() == 0, agent.tail()
    finally:
        agent.stop()
        await proxy.close()

    sequences = Counter(json.loads(r["body"])["seq"] for r in logs)
    assert sequences == Counter(range(LINES)), "each line exactly once"
    assert Counter(s for _, _, s in delivered_spans) == Counter(s for _, s in spans), "each span exactly once"
    # split for Kafka's 8, not the remembered 3: a trace's logs and spans share the partition number
    for record in logs:
        assert record["partition"] == partition_for_trace(record["trace_id"], PARTITIONS)
    for partition, trace_id, _ in delivered_spans:
        assert partition == partition_for_trace(trace_id, PARTITIONS)
    assert len({r["partition"] for r in logs}) > 3
    # in order: in each partition, a Kafka record's lines all come after the previous record's
    # (a batch is a chunk of the file; inside one record split again, lines are grouped by the
    # partition they had been split for)
    last_in_partition: dict[int, int] = {}
    for partition, value in log_values:
        seqs = [json.loads(r["body"])["seq"] for r in log_records([(partition, value)])]
        assert min(seqs) > last_in_partition.get(partition, -1)
        last_in_partition[partition] = max(seqs)
    assert memory.recall() == PARTITIONS
    assert f"cannot reach Kafka at kafka.bootstrap_servers={bootstrap}" in agent.tail(200_000)
