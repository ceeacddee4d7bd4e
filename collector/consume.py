"""Consuming: the records of each poll decoded into documents, held by trace per partition, and
handed on in deliveries as they come.

The range assignor gives each member the same partition numbers of both topics, so a trace's logs
and spans meet in one PartitionState (one TraceBuffer). Each record gets one RecordAck when it is
decoded, counting its parts: every document built from it, plus, for spans, its export to Jaeger.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from google.protobuf.message import DecodeError

from tether.collector.config import CollectorConfig
from tether.collector.correlate import Budget, Stats, TraceBuffer
from tether.collector.decode import DOCUMENT_MEMORY_BYTES, decode_logs, decode_spans, undecodable_letter
from tether.collector.deliver import Delivery
from tether.collector.documents import LogDoc, SpanDoc
from tether.collector.kafka import KafkaRecord
from tether.collector.metrics import CollectorMetrics
from tether.collector.offsets import OffsetTracker, RecordAck
from tether.collector.timestamps import TimestampWindow
from tether.schemas.records import Signal

log = logging.getLogger("tether.collector")


@dataclass
class PartitionState:
    """What one co-partition (the same number in both topics) holds in flight."""

    buffer: TraceBuffer[RecordAck]
    offsets: dict[Signal, OffsetTracker] = field(
        default_factory=lambda: {"logs": OffsetTracker(), "spans": OffsetTracker()}
    )


class RecordConsumer:
    def __init__(
        self,
        config: CollectorConfig,
        metrics: CollectorMetrics,
        *,
        highwater: Callable[[TopicPartition], int | None],
        spans_to_jaeger: bool,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.highwater = highwater
        self.spans_to_jaeger = spans_to_jaeger
        self.stats = Stats()
        self._synced = Stats()
        self.budget = Budget(config.correlation.max_pending_traces, config.correlation.max_pending_bytes)
        self.mapping = config.log_fields.mapping()
        self.window = TimestampWindow.of(config.timestamps.max_age_days, config.timestamps.max_ahead_hours)
        self.partitions: dict[int, PartitionState] = {}
        self._unparsed: Counter[str] = Counter()  # filled by log_documents, emptied per record

    def _signal(self, topic: str) -> Signal:
        return "spans" if topic == self.config.kafka.spans_topic else "logs"

    def state(self, partition: int) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            c = self.config.correlation
            state = PartitionState(
                TraceBuffer(c.wait_seconds, self.budget, c.max_recent_traces, self.stats, partition=partition)
            )
            self.partitions[partition] = state
        return state

    def trackers(self, partitions: Sequence[int]) -> dict[int, Mapping[Signal, OffsetTracker]]:
        return {partition: self.partitions[partition].offsets for partition in partitions}

    async def consume(
        self,
        batch: Mapping[TopicPartition, Sequence[KafkaRecord]],
        start_delivery: Callable[[Delivery], Awaitable[None]],
    ) -> None:
        """Decode a poll's records, then emit the traces whose window is over."""
        now = asyncio.get_running_loop().time()
        limit = self.config.elasticsearch.bulk_max_docs
        work = Delivery()
        for tp, records in batch.items():
            signal, state = self._signal(tp.topic), self.state(tp.partition)
            self.metrics.records_in.labels(tp.topic).inc(len(records))
            for record in records:
                self._consume(record, signal, state, now, work)
                # One fetch decodes into ~10x its bytes of documents: hand them on as they come,
                # so memory holds a few deliveries' worth, not a whole fetch.
                if len(work.outputs) >= limit:
                    await start_delivery(work)
                    work = Delivery()
                # A record can hold thousands of documents: let heartbeats and acks run between
                # records, or a large poll would outlast the group's session timeout.
                await asyncio.sleep(0)
            highwater = self.highwater(tp)
            if highwater is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(highwater - (records[-1].offset + 1), 0) if records else 0
                )
        for state in self.partitions.values():
            work.outputs += state.buffer.due(now)
        while len(work.outputs) > limit:
            head, work.outputs = work.outputs[:limit], work.outputs[limit:]
            await start_delivery(Delivery(head))
        if work:
            await start_delivery(work)

    def _consume(
        self, record: KafkaRecord, signal: Signal, state: PartitionState, now: float, work: Delivery
    ) -> None:
        """Decode one record into documents; what the trace buffer emits joins `work`."""
        tracker, offset, value = state.offsets[signal], record.offset, record.value
        try:
            if signal == "spans":
                request, span_docs = decode_spans(value)
            else:
                log_docs = decode_logs(value, self.mapping, self._unparsed)
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
            self.metrics.deadlettered.labels(f"undecodable-{signal}").inc()
            # Kept, not skipped: its offset is committed once the dead letter is indexed.
            work.outputs.append(undecodable_letter(record, signal, str(error), tracker.track(offset, 1)))
            return
        docs: Sequence[SpanDoc | LogDoc] = span_docs if signal == "spans" else log_docs
        moved = self.window.bound(docs, record.timestamp * 1_000_000)
        if moved:
            self.metrics.timestamps_out_of_range.labels(signal).inc(moved)
        out = work.outputs
        if signal == "spans":
            # Parts: each span document, and the record as a whole when Jaeger receives it.
            if self.spans_to_jaeger:
                ack = tracker.track(offset, len(span_docs) + 1)
                work.span_records.append((request, ack))
            else:
                ack = tracker.track(offset, len(span_docs))
            size = len(value) // max(len(span_docs), 1) + DOCUMENT_MEMORY_BYTES
            for span_doc in span_docs:
                out += state.buffer.add_span(span_doc, ack, size, now)
        else:
            ack = tracker.track(offset, len(log_docs))
            size = len(value) // max(len(log_docs), 1) + DOCUMENT_MEMORY_BYTES
            for log_doc in log_docs:
                out += state.buffer.add_log(log_doc, ack, size, now)

    def _count_unparsed(self, record: KafkaRecord) -> None:
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

    def emit_all(self, partitions: Sequence[int]) -> Delivery:
        """Every trace the partitions hold, emitted now whatever their window (a flush)."""
        now = asyncio.get_running_loop().time()
        return Delivery([o for p in partitions for o in self.partitions[p].buffer.due(now, everything=True)])

    def sync_metrics(self) -> None:
        """Move what correlation counted since the last call into the metrics."""
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
