"""Running a collector: one member of the consumer group over the logs and spans topics.

The range assignor gives each member the same partition numbers of both topics (they have equal
partition counts, checked at start), so a trace's logs and spans meet in one process and one
TraceBuffer. Offsets are committed only up to the first record whose documents Elasticsearch
(and, for spans, Jaeger) have not acknowledged yet.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tether.collector.config import CollectorConfig
from tether.collector.correlate import Budget, Output, Stats, TraceBuffer
from tether.collector.documents import log_documents, native_log_documents, span_documents
from tether.collector.metrics import CollectorMetrics
from tether.collector.offsets import OffsetTracker
from tether.collector.sinks.elasticsearch import ElasticsearchSink, deadletter_source
from tether.collector.sinks.jaeger import JaegerSink
from tether.logs import configure_logging
from tether.ops import OpsServer
from tether.schemas.indices import DEADLETTER_ALIAS
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import Signal

log = logging.getLogger("tether.collector")

COMMIT_INTERVAL_SECONDS = 0.5
# Container allocations between young-generation collections (Python's default is 700).
GC_YOUNG_THRESHOLD = 50_000
# What a held document costs in memory beyond its share of the Kafka record: a decoded document
# is a tree of Python dicts and strings, measured at ~2.4-2.5 kB for spans and log lines.
DOCUMENT_MEMORY_BYTES = 2048


class PartitionCountMismatchError(RuntimeError):
    pass


@dataclass
class PartitionState:
    """What one co-partition (the same number in both topics) holds in flight."""

    buffer: TraceBuffer
    offsets: dict[Signal, OffsetTracker] = field(
        default_factory=lambda: {"logs": OffsetTracker(), "spans": OffsetTracker()}
    )


@dataclass
class _Delivery:
    """Documents (at most `bulk_max_docs`) and the Jaeger export of the records they came from."""

    outputs: list[Output] = field(default_factory=list)
    jaeger_requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    jaeger_acks: list[tuple[OffsetTracker, int]] = field(default_factory=list)


class Collector:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.metrics = CollectorMetrics()
        self.stats = Stats()
        self._synced = Stats()
        self.budget = Budget(config.correlation.max_pending_traces, config.correlation.max_pending_bytes)
        self.mapping = default_mapping()
        self.elasticsearch = ElasticsearchSink(config.elasticsearch, self.metrics)
        self.jaeger = JaegerSink(config.jaeger, self.metrics) if config.jaeger.enabled else None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=config.kafka.bootstrap_servers,
            group_id=config.kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset=config.kafka.auto_offset_reset,
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_poll_records=config.kafka.max_poll_records,
            fetch_max_bytes=config.kafka.fetch_max_bytes,
            max_partition_fetch_bytes=config.kafka.max_partition_fetch_bytes,
        )
        self.partitions: dict[int, PartitionState] = {}
        self.started = False
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(config.elasticsearch.max_concurrent_bulks)
        self._deliveries: set[asyncio.Task[None]] = set()
        self._last_commit = 0.0
        self._unparsed: Counter[str] = Counter()  # filled by log_documents, emptied per record

    def ready(self) -> bool:
        return self.started and self.elasticsearch.healthy

    def _topic(self, topic: str) -> Signal:
        return "spans" if topic == self.config.kafka.spans_topic else "logs"

    async def start(self) -> None:
        await self.elasticsearch.install_templates()
        await self.consumer.start()
        await self._check_copartitioned()
        topics = [self.config.kafka.logs_topic, self.config.kafka.spans_topic]
        self.consumer.subscribe(topics, listener=_Rebalance(self))
        self.started = True

    async def _check_copartitioned(self) -> None:
        counts: dict[str, int] = {}
        await self.consumer._client.force_metadata_update()
        for topic in (self.config.kafka.logs_topic, self.config.kafka.spans_topic):
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
            await self._settle()
            await self._flush(list(self.partitions))
        await self.consumer.stop()
        await self.elasticsearch.close()
        if self.jaeger is not None:
            await self.jaeger.close()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=200)
            async with self._lock:
                await self._process(batch)
                loop_time = asyncio.get_running_loop().time()
                if loop_time - self._last_commit >= COMMIT_INTERVAL_SECONDS:
                    self._last_commit = loop_time
                    await self._commit(list(self.partitions))

    async def _settle(self) -> None:
        """Wait for every delivery in flight (their acknowledgements move the watermarks)."""
        if self._deliveries:
            await asyncio.gather(*self._deliveries)

    def _state(self, partition: int) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            c = self.config.correlation
            state = PartitionState(
                TraceBuffer(c.wait_seconds, self.budget, c.max_recent_traces, self.stats, partition=partition)
            )
            self.partitions[partition] = state
        return state

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        now = asyncio.get_running_loop().time()
        limit = self.config.elasticsearch.bulk_max_docs
        work = _Delivery()
        for tp, records in batch.items():
            topic, state = self._topic(tp.topic), self._state(tp.partition)
            self.metrics.records_in.labels(tp.topic).inc(len(records))
            for record in records:
                self._consume(record, topic, state, now, work)
                # One fetch decodes into ~10x its bytes of documents: hand them on as they come,
                # so memory holds a few deliveries' worth, not a whole fetch.
                if len(work.outputs) >= limit:
                    await self._dispatch(work)
                    work = _Delivery()
                # A record can hold thousands of documents: let heartbeats and acks run between
                # records, or a large poll would outlast the group's session timeout.
                await asyncio.sleep(0)
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(highwater - (records[-1].offset + 1), 0) if records else 0
                )
        for state in self.partitions.values():
            work.outputs += state.buffer.due(now)
        while len(work.outputs) > limit:
            head, work.outputs = work.outputs[:limit], work.outputs[limit:]
            await self._dispatch(_Delivery(head))
        if work.outputs or work.jaeger_requests or work.jaeger_acks:
            await self._dispatch(work)

    async def _dispatch(self, work: _Delivery) -> None:
        """Start one delivery; wait while `max_concurrent_bulks` are in flight (backpressure on polling)."""
        await self._slots.acquire()
        self.metrics.inflight_documents.inc(len(work.outputs))
        task = asyncio.create_task(self._deliver(work.outputs, work.jaeger_requests, work.jaeger_acks))
        self._deliveries.add(task)
        task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery failed", exc_info=task.exception())

    def _consume(
        self,
        record: Any,
        topic: Signal,
        state: PartitionState,
        now: float,
        work: _Delivery,
    ) -> None:
        """Decode one record into documents; what the trace buffers emit joins `work`."""
        tracker, offset, value = state.offsets[topic], record.offset, record.value
        try:
            if topic == "spans":
                request = ExportTraceServiceRequest.FromString(value)
                span_docs = span_documents(request)
            else:  # lines read from files natively; anything else (or unusual) by the reference
                native = native_log_documents(value, self.mapping)
                log_docs = (
                    native
                    if native is not None
                    else log_documents(
                        ExportLogsServiceRequest.FromString(value), self.mapping, self._unparsed
                    )
                )
                if self._unparsed:
                    self._count_unparsed(record)
        except DecodeError as error:  # a poison record must not block its partition
            log.error(
                "undecodable Kafka record skipped",
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": offset,
                    "error": str(error),
                },
            )
            self.metrics.deadlettered.labels(f"undecodable-{topic}").inc()
            # Kept, not skipped: its offset is committed once the dead letter is indexed.
            tracker.add(offset, 1)
            work.outputs.append(_undecodable_letter(record, topic, str(error)))
            return
        out = work.outputs
        if topic == "spans":
            tracker.add(offset, len(span_docs) + (self.jaeger is not None))
            if self.jaeger is not None:
                work.jaeger_requests.append(request)
                work.jaeger_acks.append((tracker, offset))
            size = len(value) // max(len(span_docs), 1) + DOCUMENT_MEMORY_BYTES
            for span_doc in span_docs:
                out += state.buffer.add_span(span_doc, offset, size, now)
        else:
            tracker.add(offset, len(log_docs))
            size = len(value) // max(len(log_docs), 1) + DOCUMENT_MEMORY_BYTES
            for log_doc in log_docs:
                out += state.buffer.add_log(log_doc, offset, size, now)

    def _count_unparsed(self, record: Any) -> None:
        """Lines the agent sent as JSON objects, indexed as plain messages instead: say where."""
        for reason, count in self._unparsed.items():
            self.metrics.unparsed_lines.labels(reason).inc(count)
        log.warning(
            "log lines that are no usable JSON object indexed as plain messages (tether.parse_error)",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reasons": dict(self._unparsed),
            },
        )
        self._unparsed.clear()

    async def _deliver(
        self,
        outputs: list[Output],
        jaeger_requests: list[ExportTraceServiceRequest],
        jaeger_acks: list[tuple[OffsetTracker, int]],
    ) -> None:
        if outputs or jaeger_requests:
            jaeger = self.jaeger.export(jaeger_requests) if self.jaeger is not None else asyncio.sleep(0)
            rejections, _ = await asyncio.gather(self.elasticsearch.index(outputs), jaeger)
            await self.elasticsearch.deadletter(rejections)  # kept, counted: the batch is not blocked
            for alias, count in Counter(output.alias for output in outputs).items():
                self.metrics.documents_out.labels(alias).inc(count)
        for output in outputs:
            if output.ack is not None:
                partition, topic, offset = output.ack
                state = self.partitions.get(partition)
                if state is not None:
                    state.offsets[topic].done(offset)
        for tracker, offset in jaeger_acks:
            tracker.done(offset)
        self.metrics.inflight_documents.dec(len(outputs))
        self._sync_metrics()

    def _sync_metrics(self) -> None:
        s, last = self.stats, self._synced
        m = self.metrics
        for result, now_value, before in (
            ("span", s.logs_correlated, last.logs_correlated),
            ("trace", s.logs_trace_only, last.logs_trace_only),
            ("none", s.logs_uncorrelated, last.logs_uncorrelated),
            ("untraced", s.logs_untraced, last.logs_untraced),
        ):
            m.correlation.labels(result).inc(now_value - before)
        m.late_arrivals.labels("span").inc(s.late_spans - last.late_spans)
        m.late_arrivals.labels("log").inc(s.late_logs - last.late_logs)
        m.evicted_traces.inc(s.evicted - last.evicted)
        self._synced = Stats(**vars(s))
        m.buffered_traces.set(self.budget.traces)
        m.buffered_bytes.set(self.budget.bytes)

    async def _commit(self, partitions: list[int]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for partition in partitions:
            for topic, tracker in self.partitions[partition].offsets.items():
                watermark = tracker.watermark()
                name = self.config.kafka.spans_topic if topic == "spans" else self.config.kafka.logs_topic
                if watermark is not None:
                    offsets[TopicPartition(name, partition)] = OffsetAndMetadata(watermark, "")
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as error:
            # The group moved on without us (e.g. a session timeout): the partitions' new owner
            # resumes from the last committed offsets and replays the rest under the same ids.
            self.metrics.commit_failures.inc()
            log.warning(
                "offset commit refused by the group; the next owner replays", extra={"error": str(error)}
            )
            return
        self.metrics.commits.inc()

    async def _flush(self, partitions: list[int]) -> None:
        """Emit every trace the partitions hold, index it, and commit."""
        now = asyncio.get_running_loop().time()
        outputs = [o for p in partitions for o in self.partitions[p].buffer.due(now, everything=True)]
        await self._deliver(outputs, [], [])
        await self._commit(partitions)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        partitions = sorted({tp.partition for tp in revoked} & set(self.partitions))
        async with self._lock:
            try:
                await self._settle()
                await self._flush(partitions)
            finally:  # even when the commit is refused: a reassigned partition starts afresh
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


def _undecodable_letter(record: Any, topic: Signal, error: str) -> Output:
    """The dead letter of a Kafka record that is no OTLP request: its bytes in base64, under an id
    of its topic, partition and offset (a replay writes the same letter again)."""
    now_ns = time.time_ns()
    doc_id = f"{record.topic}:{record.partition}:{record.offset}"
    source = deadletter_source(
        now_ns,
        index=record.topic,
        doc_id=doc_id,
        status=0,
        error_type="undecodable_record",
        reason=f"not an OTLP {'trace' if topic == 'spans' else 'logs'} export request: {error}",
        original=base64.b64encode(record.value or b"").decode(),
        encoding="base64",
    )
    return Output(DEADLETTER_ALIAS, doc_id, now_ns, source, (record.partition, topic, record.offset))


def _tune_garbage_collector() -> None:
    """Documents are trees of dicts freed by reference counting, yet each allocates containers that
    trigger the cyclic collector, whose full passes walk every held document and every imported
    module's objects: 70-84 -> 53-60 CPU us per document in the collector benchmark. Collect young objects
    less often, and leave what start-up loaded out of the scans for good."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)


async def run_collector(config: CollectorConfig, stop: asyncio.Event | None = None) -> None:
    configure_logging(config.log_level)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    _tune_garbage_collector()
    collector = Collector(config)
    ops = OpsServer(config.ops.endpoint, collector.metrics.registry, ready=collector.ready)
    await ops.start()
    try:
        await collector.start()
        log.info("collector started", extra={"group_id": config.kafka.group_id})
        await collector.run(stop)
    finally:
        await collector.stop()
        await ops.stop()
        log.info("collector stopped", extra=vars(collector.stats))
