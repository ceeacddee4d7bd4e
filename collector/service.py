"""Running a collector: one member of the consumer group over the logs and spans topics.

The range assignor gives each member the same partition numbers of both topics (they have
equal partition counts, checked at start), so a trace's logs and spans meet in one process.
Offsets are committed only up to the first record whose documents are not yet acknowledged
by Elasticsearch and Jaeger.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import defaultdict
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import OffsetAndMetadata
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.config import CollectorConfig
from collector.correlate import Correlator, PendingLog, monotonic
from collector.documents import log_documents, span_documents
from collector.offsets import OffsetTracker
from collector.sinks.elasticsearch import ElasticsearchSink, IndexRequest
from collector.sinks.jaeger import JaegerSink
from schemas.indices import LOGS_ALIAS, SPANS_ALIAS
from schemas.log_fields import default_mapping
from tether.logs import configure_logging

log = logging.getLogger("tether.collector")


class PartitionCountMismatchError(RuntimeError):
    pass


@dataclass
class PartitionState:
    """What one co-partition (the same number in both topics) holds in flight."""

    correlator: Correlator
    offsets: dict[str, OffsetTracker] = field(default_factory=lambda: defaultdict(OffsetTracker))


class Collector:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.mapping = default_mapping()
        self.elasticsearch = ElasticsearchSink(config.elasticsearch)
        self.jaeger = JaegerSink(config.jaeger) if config.jaeger.enabled else None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=config.kafka.bootstrap_servers,
            group_id=config.kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset=config.kafka.auto_offset_reset,
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_poll_records=config.kafka.max_poll_records,
        )
        self.partitions: dict[int, PartitionState] = {}
        self._lock = asyncio.Lock()
        self.indexed = {"logs": 0, "spans": 0, "rejected": 0}

    async def start(self) -> None:
        await self.elasticsearch.install_templates()
        await self.consumer.start()
        await self._check_copartitioned()
        topics = [self.config.kafka.logs_topic, self.config.kafka.spans_topic]
        self.consumer.subscribe(topics, listener=_Rebalance(self))

    async def _check_copartitioned(self) -> None:
        counts: dict[str, int] = {}
        for topic in (self.config.kafka.logs_topic, self.config.kafka.spans_topic):
            await self.consumer._client.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(topic)
            if not partitions:
                raise PartitionCountMismatchError(f"topic {topic!r} does not exist on the Kafka cluster")
            counts[topic] = len(partitions)
        if len(set(counts.values())) != 1:
            raise PartitionCountMismatchError(
                f"the logs and spans topics must have the same partition count, found {counts}: "
                "add partitions to the smaller one (kafka-topics --alter --partitions N)"
            )

    async def stop(self) -> None:
        async with self._lock:
            await self._flush(list(self.partitions), everything=True)
        await self.consumer.stop()
        await self.elasticsearch.close()
        if self.jaeger is not None:
            await self.jaeger.close()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=200)
            async with self._lock:
                await self._process(batch)

    def _state(self, partition: int) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            c = self.config.correlation
            state = PartitionState(Correlator(c.wait_seconds, c.max_cached_spans, c.max_pending_logs))
            self.partitions[partition] = state
        return state

    async def _process(self, batch: dict[TopicPartition, list[object]]) -> None:
        now = monotonic()
        requests: list[IndexRequest] = []
        acks: list[tuple[OffsetTracker, int]] = []
        jaeger_requests: list[ExportTraceServiceRequest] = []
        # Spans first: logs of the same poll can then be joined at once.
        ordered = sorted(batch.items(), key=lambda item: item[0].topic != self.config.kafka.spans_topic)
        for tp, records in ordered:
            state = self._state(tp.partition)
            tracker = state.offsets[tp.topic]
            for record in records:
                offset, value = record.offset, record.value  # type: ignore[attr-defined]
                if tp.topic == self.config.kafka.spans_topic:
                    request = ExportTraceServiceRequest.FromString(value)
                    docs = span_documents(request)
                    state.correlator.add_spans(docs)
                    tracker.add(offset, 1)
                    jaeger_requests.append(request)
                    requests.extend(
                        IndexRequest(SPANS_ALIAS, d.doc_id, d.timestamp_ns, d.source) for d in docs
                    )
                    acks.append((tracker, offset))
                else:
                    logs = log_documents(ExportLogsServiceRequest.FromString(value), self.mapping)
                    tracker.add(offset, len(logs))
                    for doc in logs:
                        ready = state.correlator.add_log(doc, offset, now)
                        if ready is not None:
                            requests.append(self._log_request(state, ready))
                            acks.append((tracker, offset))
        self._release(list(self.partitions), now, requests, acks, everything=False)
        await self._deliver(requests, acks, jaeger_requests)

    def _log_request(self, state: PartitionState, item: PendingLog) -> IndexRequest:
        return IndexRequest(
            LOGS_ALIAS, item.doc.doc_id, item.doc.timestamp_ns, state.correlator.enrich(item.doc)
        )

    async def _deliver(
        self,
        requests: list[IndexRequest],
        acks: list[tuple[OffsetTracker, int]],
        jaeger_requests: list[ExportTraceServiceRequest],
    ) -> None:
        if requests or jaeger_requests:
            jaeger = self.jaeger.export(jaeger_requests) if self.jaeger is not None else asyncio.sleep(0)
            rejections, _ = await asyncio.gather(self.elasticsearch.index(requests), jaeger)
            self.indexed["rejected"] += len(rejections)
            self.indexed["logs"] += sum(r.alias == LOGS_ALIAS for r in requests)
            self.indexed["spans"] += sum(r.alias == SPANS_ALIAS for r in requests)
        for tracker, offset in acks:
            tracker.done(offset)
        await self._commit(list(self.partitions))

    async def _commit(self, partitions: list[int]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for partition in partitions:
            for topic, tracker in self.partitions[partition].offsets.items():
                watermark = tracker.watermark()
                if watermark is not None:
                    offsets[TopicPartition(topic, partition)] = OffsetAndMetadata(watermark, "")
        if offsets:
            await self.consumer.commit(offsets)

    async def _flush(self, partitions: list[int], everything: bool) -> None:
        """Index what the given partitions hold (waiting logs included) and commit them."""
        requests: list[IndexRequest] = []
        acks: list[tuple[OffsetTracker, int]] = []
        self._release(partitions, monotonic(), requests, acks, everything=everything)
        await self._deliver(requests, acks, [])

    def _release(
        self,
        partitions: list[int],
        now: float,
        requests: list[IndexRequest],
        acks: list[tuple[OffsetTracker, int]],
        *,
        everything: bool,
    ) -> None:
        """Add the waiting logs that are due (all, with `everything`) to `requests` and `acks`."""
        for partition in partitions:
            state = self.partitions[partition]
            for item in state.correlator.release(now, everything=everything):
                requests.append(self._log_request(state, item))
                acks.append((state.offsets[self.config.kafka.logs_topic], item.offset))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        partitions = sorted({tp.partition for tp in revoked} & set(self.partitions))
        async with self._lock:
            await self._flush(partitions, everything=True)
            for partition in partitions:
                del self.partitions[partition]
        log.info("partitions revoked", extra={"partitions": partitions})


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.collector.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(
            "partitions assigned",
            extra={"partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)},
        )


async def run_collector(config: CollectorConfig, stop: asyncio.Event | None = None) -> None:
    configure_logging(config.log_level)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    collector = Collector(config)
    await collector.start()
    log.info("collector started", extra={"group_id": config.kafka.group_id})
    try:
        await collector.run(stop)
    finally:
        await collector.stop()
        log.info("collector stopped", extra=collector.indexed)
