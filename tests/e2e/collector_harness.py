"""Running real `tether collector` processes, and producing contract-conformant records to Kafka.

Records are made by the agent's own encoders (agent.encode), so they are exactly what an agent
would produce: one record per partition, each trace in its partition of both topics.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from elasticsearch import AsyncElasticsearch
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tests.e2e.agent_harness import PARTITIONS, TetherProcess, free_port
from tether.agent.encode import TRACES, FileLine, encode_file_lines, split_request
from tether.agent.parse import parse_line
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import LOGS_SCHEMA, SCHEMA_HEADER, SPANS_SCHEMA
from tether.stack import Stack
from tether.stack.kafka import ensure_topics

T0 = time.time_ns() - 60 * 1_000_000_000


@dataclass
class TraceSpec:
    """One synthetic trace: a root and children, each with log lines."""

    trace_id: bytes
    service: str
    spans: list[Span] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)  # JSON log lines, agent format

    @classmethod
    def make(cls, n: int, children: int = 2, logs_per_span: int = 2, run: str = "") -> TraceSpec:
        trace = cls(os.urandom(16), "checkout" if n % 2 == 0 else "payments")
        root_id = os.urandom(8)
        start = T0 + n * 1_000_000
        for c in range(children + 1):
            span_id = root_id if c == 0 else os.urandom(8)
            span = Span(
                trace_id=trace.trace_id,
                span_id=span_id,
                parent_span_id=b"" if c == 0 else root_id,
                name=f"{run} op {n}.{c}",
                kind=Span.SPAN_KIND_SERVER if c == 0 else Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start + c * 1000,
                end_time_unix_nano=start + c * 1000 + 500_000,
                status=Status(
                    code=Status.STATUS_CODE_ERROR if (n % 5 == 0 and c == 1) else Status.STATUS_CODE_UNSET
                ),
            )
            trace.spans.append(span)
            for k in range(logs_per_span):
                trace.lines.append(
                    orjson.dumps(
                        {
                            "@timestamp": (start + c * 1000 + k) / 1e9,
                            "level": "error" if k else "info",
                            "trace_id": trace.trace_id.hex(),
                            "span_id": span_id.hex(),
                            "message": f"{run} log {n}.{c}.{k}",
                            "data": {"n": n},
                        }
                    )
                )
        return trace

    def span_request(self, spans: list[Span]) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(
                        attributes=[KeyValue(key="service.name", value=AnyValue(string_value=self.service))]
                    ),
                    scope_spans=[ScopeSpans(spans=spans)],
                )
            ]
        )


class Producer:
    """Writes log lines and spans the way the agent does."""

    def __init__(
        self,
        stack: Stack,
        logs_topic: str,
        spans_topic: str,
        agent_id: str = "e2e-agent",
        **kafka_options: Any,  # security (SASL_SSL, CA) for the secure stack's Kafka
    ) -> None:
        self.stack, self.logs_topic, self.spans_topic, self.agent_id = (
            stack,
            logs_topic,
            spans_topic,
            agent_id,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=stack.kafka.bootstrap, acks="all", **kafka_options
        )
        self._offset = 0
        # A new file each time, as a real agent's: record ids (agent, fingerprint, offset) of two
        # producers never meet, or a versioned write of one would be refused as the other's replay.
        self.fingerprint = os.urandom(8).hex()

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._producer.stop()

    async def lines(self, lines: list[bytes]) -> None:
        mapping = default_mapping()
        file_lines = []
        for line in lines:
            file_lines.append(FileLine(parse_line(line, mapping), self._offset))
            self._offset += len(line) + 1
        records = encode_file_lines(
            file_lines,
            path="/e2e/app.log",
            fingerprint=self.fingerprint,
            agent_id=self.agent_id,
            observed_ns=time.time_ns(),
            partitions=PARTITIONS,
            untraced_partition=0,
        )
        await self._send(self.logs_topic, records, LOGS_SCHEMA)

    async def log_request(self, request: ExportLogsServiceRequest, partition: int = 0) -> None:
        """One logs record as given, however odd (the agent would not write some of them)."""
        await self._send(self.logs_topic, {partition: request.SerializeToString()}, LOGS_SCHEMA)

    async def raw(self, topic: str, value: bytes, partition: int = 0) -> int:
        """Any bytes as one record of `topic` (no agent writes them); returns its offset."""
        metadata = await self._producer.send_and_wait(topic, value, partition=partition)
        return int(metadata.offset)

    async def spans(self, request: ExportTraceServiceRequest) -> None:
        await self._send(
            self.spans_topic, split_request(request, TRACES, PARTITIONS, None).records, SPANS_SCHEMA
        )

    async def _send(self, topic: str, records: dict[int, bytes], schema: bytes) -> None:
        for partition, value in records.items():
            await self._producer.send_and_wait(
                topic, value, partition=partition, headers=[(SCHEMA_HEADER, schema)]
            )


@dataclass
class CollectorProcess(TetherProcess):
    stack: Stack
    root: Path
    logs_topic: str
    spans_topic: str
    group: str
    wait_seconds: float = 2.0
    name: str = "collector"
    kafka_options: str = ""  # more keys of the kafka section, e.g. "max_poll_records: 5"
    correlation_options: str = ""  # more keys of the correlation section
    elasticsearch_options: str = ""  # more keys of the elasticsearch section, e.g. "bulk_max_docs: 500"
    jaeger_enabled: bool = True
    jaeger_options: str = ""  # more keys of the jaeger section, e.g. "max_log_events_per_span: 3"
    sampling: str = ""  # keys of the sampling section, e.g. "enabled: true, probability: 0.3"

    def __post_init__(self) -> None:
        self.kind = "collector"
        self.process = None
        self.root.mkdir(parents=True, exist_ok=True)
        self.ops_port = free_port()
        self.output = self.root / f"{self.name}.out"
        self.config = self.root / f"{self.name}.yaml"
        # only when given: some tests edit the written line ("replicas: 0}")
        elasticsearch_options = f", {self.elasticsearch_options}" if self.elasticsearch_options else ""
        self.config.write_text(f"""
kafka: {{bootstrap_servers: "{self.stack.kafka.bootstrap}", group_id: "{self.group}",
        logs_topic: {self.logs_topic}, spans_topic: {self.spans_topic}, {self.kafka_options}}}
correlation: {{wait_seconds: {self.wait_seconds}, {self.correlation_options}}}
elasticsearch: {{url: "{self.stack.elasticsearch.url}", replicas: 0{elasticsearch_options}}}
jaeger: {{endpoint: "{self.stack.jaeger.otlp_grpc_endpoint}", enabled: {str(self.jaeger_enabled).lower()},
        {self.jaeger_options}}}
sampling: {{{self.sampling}}}
ops: {{endpoint: "127.0.0.1:{self.ops_port}"}}
""")

    def start(self) -> None:
        self.launch()

    def wait_assigned(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.tail()
            if b"partitions assigned" in self.output.read_bytes():
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} got no partitions:\n{self.tail()}")

    def metrics(self) -> dict[str, float]:
        return self.samples()


def new_topics(prefix: str) -> tuple[str, str, str]:
    run = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return f"{run}.logs", f"{run}.spans", run


async def create_topics(stack: Stack, logs_topic: str, spans_topic: str) -> None:
    await ensure_topics(stack.kafka.bootstrap, [logs_topic, spans_topic], PARTITIONS)


async def search(stack: Stack, index: str, query: dict[str, Any], size: int = 10_000) -> list[dict[str, Any]]:
    es = AsyncElasticsearch(stack.elasticsearch.url)
    try:
        await es.indices.refresh(index=index, ignore_unavailable=True)
        response = await es.search(index=index, query=query, size=size, ignore_unavailable=True)
        return list(response["hits"]["hits"])
    finally:
        await es.close()


async def wait_for_count(
    stack: Stack, index: str, query: dict[str, Any], expected: int, within: float = 120
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    hits: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            hits = await search(stack, index, query)
        except Exception:  # Elasticsearch restarting in the outage test
            hits = []
        if len(hits) >= expected:
            return hits
        await asyncio.sleep(1)
    return hits
