"""Small fakes of what a Collector is given: the group consumer, Elasticsearch and Jaeger.

Sink calls are recorded; a sink that `holds` keeps each call waiting until the test answers it,
like a transport the test drives by hand. Records carry real OTLP requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tether.collector.config import CollectorConfig
from tether.collector.sinks.bulk import Indexable
from tether.collector.sinks.elasticsearch import Rejection
from tether.schemas.records import ATTR_AGENT_ID, ATTR_RECORD_ID, FILE_SCOPE

LOGS = "t.logs"
SPANS = "t.spans"
T0 = 1_704_164_645_000_000_000


def config(
    *,
    wait_seconds: float = 0,
    bulk_max_docs: int = 5000,
    max_concurrent_bulks: int = 4,
    correlation: dict[str, Any] | None = None,  # more keys of the correlation section
) -> CollectorConfig:
    return CollectorConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": "kafka.invalid:9092", "logs_topic": LOGS, "spans_topic": SPANS},
            "correlation": {"wait_seconds": wait_seconds, **(correlation or {})},
            "elasticsearch": {"bulk_max_docs": bulk_max_docs, "max_concurrent_bulks": max_concurrent_bulks},
        }
    )


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes
    timestamp: int = 0  # ms; none: the timestamp window is not applied


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span_request(trace_id: bytes, span_id: bytes) -> ExportTraceServiceRequest:
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        name="GET /checkout",
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 1_000_000,
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", "checkout")]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="lib"), spans=[span])],
            )
        ]
    )


def span_record(offset: int, trace_id: bytes, span_id: bytes, *, partition: int = 0) -> Record:
    return Record(SPANS, partition, offset, span_request(trace_id, span_id).SerializeToString())


def log_record(offset: int, trace_id: bytes = b"", span_id: bytes = b"", *, partition: int = 0) -> Record:
    """One log line read from a file (untraced unless given a trace), id agent:fp:<offset>."""
    record = LogRecord(
        time_unix_nano=T0,
        body=AnyValue(string_value='{"message": "hello", "level": "info"}'),
        trace_id=trace_id,
        span_id=span_id,
        attributes=[kv(ATTR_RECORD_ID, f"agent:fp:{offset}")],
    )
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=[kv(ATTR_AGENT_ID, "agent")]),
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=FILE_SCOPE), log_records=[record])],
            )
        ]
    )
    return Record(LOGS, partition, offset, request.SerializeToString())


def poll(*records: Record) -> dict[TopicPartition, list[Record]]:
    batch: dict[TopicPartition, list[Record]] = {}
    for record in records:
        batch.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
    return batch


class FakeConsumer:
    """The group consumer: polls as scripted, commits recorded per (topic, partition), or refused."""

    def __init__(self, partitions: dict[str, int] | None = None) -> None:
        self.polls: list[dict[TopicPartition, list[Record]]] = []
        self.committed: dict[tuple[str, int], int] = {}
        self.refuse_commits = 0  # the next this many commits raise CommitFailedError
        self.partition_counts = partitions if partitions is not None else {LOGS: 4, SPANS: 4}
        self.subscribed: list[str] = []
        self.listener: ConsumerRebalanceListener | None = None
        self.stopped = False
        self.lags: dict[TopicPartition, int | None] = {}
        self.paused_partitions: set[TopicPartition] = set()
        self.refusal: str | None = None  # as KafkaConsumer says why Kafka refuses it

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def refresh_metadata(self) -> None:
        pass

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.partition_counts.get(topic)
        return set(range(count)) if count else None

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None:
        self.subscribed, self.listener = topics, listener

    async def getmany(self, *, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        return self.polls.pop(0) if self.polls else {}

    def lag(self, partition: TopicPartition) -> int | None:
        """Caught up, unless the test says how far behind a partition is."""
        return self.lags.get(partition, 0)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused_partitions.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused_partitions.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_partitions)

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if self.refuse_commits:
            self.refuse_commits -= 1
            raise CommitFailedError("the group rebalanced")
        for tp, meta in offsets.items():
            self.committed[(tp.topic, tp.partition)] = meta.offset


class Call:
    """One call a fake sink received, with what it was given."""

    def __init__(self, payload: list[Any]) -> None:
        self.payload = payload
        self.answered = asyncio.Event()

    def answer(self) -> None:
        self.answered.set()


class FakeElasticsearch:
    """Indexes whatever it is given, refuses the ids in `refuse`, fails the next `fail` calls."""

    def __init__(self, *, hold: bool = False) -> None:
        self.healthy = True
        self.write_blocked = False
        self.hold = hold
        self.calls: list[Call] = []
        self.refuse: set[str] = set()
        self.fail = 0
        self.closed = False

    @property
    def received(self) -> list[Any]:
        return [request for call in self.calls for request in call.payload]

    async def install_templates(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    async def index(self, requests: Sequence[Indexable]) -> list[Rejection]:
        if not requests:  # like the real sink: nothing to send, nothing to wait for
            return []
        call = Call(list(requests))
        self.calls.append(call)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("Elasticsearch fake failed")
        if self.hold:
            await call.answered.wait()
        return [
            Rejection(r, 400, "refused", "mapper_parsing_exception")
            for r in requests
            if r.doc_id in self.refuse
        ]

    async def deadletter(self, rejections: list[Rejection]) -> None:
        """Like the real sink: the letters are indexed before this returns."""
        if rejections:
            await self.index([rejection.deadletter(T0) for rejection in rejections])


class FakeJaeger:
    def __init__(self, *, hold: bool = False) -> None:
        self.hold = hold
        self.calls: list[Call] = []
        self.closed = False
        self.healthy = True

    async def export(self, requests: list[ExportTraceServiceRequest]) -> None:
        if not requests:  # like the real sink
            return
        call = Call(list(requests))
        self.calls.append(call)
        if self.hold:
            await call.answered.wait()

    async def close(self) -> None:
        self.closed = True


async def spin() -> None:
    """Let every task that can run do so (deliveries finish within a few turns of the loop)."""
    for _ in range(20):
        await asyncio.sleep(0)
