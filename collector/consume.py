"""Consuming: the records of each poll decoded into documents, held by trace per partition, and
handed on in deliveries as they come.

The range assignor gives each member the same partition numbers of both topics, so a trace's logs
and spans meet in one PartitionState (one TraceBuffer). Each record gets one RecordAck when it is
decoded, counting its parts: every document built from it, plus, for spans, its export to Jaeger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from google.protobuf.message import DecodeError

from tether.collector.config import CollectorConfig
from tether.collector.correlate import Budget, RecentBudget, RepairBudget, Stats, TraceBuffer
from tether.collector.decode import DOCUMENT_MEMORY_BYTES, decode_logs, decode_spans, undecodable_letter
from tether.collector.deliver import Delivery
from tether.collector.documents import LogDoc, SpanDoc
from tether.collector.event_time import PartitionClock
from tether.collector.held_exports import span_exports
from tether.collector.kafka import KafkaRecord
from tether.collector.metrics import CollectorMetrics
from tether.collector.offsets import OffsetTracker, RecordAck
from tether.collector.red_metrics import RedMetrics
from tether.collector.sampling import Sampler, SamplingCounts
from tether.collector.timestamps import TimestampWindow
from tether.schemas.records import Signal

log = logging.getLogger("tether.collector")

# How far one topic of a partition may read ahead of the other, as a share of the correlation
# window: more holds more traces in memory, less pauses and resumes (refetches) more often.
ALIGNMENT_SLACK = 0.25

# Services named in per-service correlation metrics; beyond it they are counted as "_overflow".
MAX_SERVICE_LABELS = 500


@dataclass
class PartitionState:
    """What one co-partition (the same number in both topics) holds in flight."""

    buffer: TraceBuffer[RecordAck]
    clock: PartitionClock
    offsets: dict[Signal, OffsetTracker] = field(
        default_factory=lambda: {"logs": OffsetTracker(), "spans": OffsetTracker()}
    )
    # Records polled but not consumed yet: stamped past the other topic's position (by more than
    # the slack), they wait for it with their topic-partition paused. Never acknowledged, so never
    # committed: at most one poll's records, dropped with the partition (its next reader reads them).
    fetched: dict[Signal, deque[KafkaRecord]] = field(
        default_factory=lambda: {"logs": deque(), "spans": deque()}
    )


class RecordConsumer:
    def __init__(
        self,
        config: CollectorConfig,
        metrics: CollectorMetrics,
        *,
        lag: Callable[[TopicPartition], int | None],
        spans_to_jaeger: bool,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.lag = lag  # records behind the end of a topic-partition; None while unknown
        self.spans_to_jaeger = spans_to_jaeger
        self.stats = Stats()
        self._synced = Stats()
        self.budget = Budget(config.correlation.max_pending_traces, config.correlation.max_pending_bytes)
        self.repair = RepairBudget(config.correlation.max_repairable_logs)
        self.recent = RecentBudget(config.correlation.max_recent_traces)
        self.red_metrics = RedMetrics(metrics.registry, config.red_metrics)
        self.sampling_counts = SamplingCounts(metrics.registry, MAX_SERVICE_LABELS)
        self._service_labels: set[str] = set()
        self.mapping = config.log_fields.mapping()
        self.window = TimestampWindow.of(config.timestamps.max_age_days, config.timestamps.max_ahead_hours)
        self.partitions: dict[int, PartitionState] = {}
        self._unparsed: Counter[str] = Counter()  # filled by log_documents, emptied per record

    def _signal(self, topic: str) -> Signal:
        return "spans" if topic == self.config.kafka.spans_topic else "logs"

    def state(self, partition: int, now: float) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            c = self.config.correlation
            state = PartitionState(
                TraceBuffer(
                    c.wait_seconds,
                    self.budget,
                    c.max_recent_traces,
                    self.stats,
                    partition=partition,
                    repair=self.repair,
                    recent=self.recent,
                    inference_skew_ns=int(c.inference_skew_ms * 1_000_000),
                    # one per partition: the rate limiter's state is the partition's own
                    sampler=Sampler(self.config.sampling) if self.config.sampling.enabled else None,
                    sampling_counts=self.sampling_counts,
                    max_log_events=self.config.jaeger.max_log_events_per_span,
                ),
                PartitionClock(slack_ms=int(c.wait_seconds * 1000 * ALIGNMENT_SLACK)),
            )
            state.clock.started(now)
            self.partitions[partition] = state
        return state

    def drop(self, partition: int) -> None:
        """Forget a revoked partition, giving what it remembered back to the shared bounds."""
        state = self.partitions.pop(partition, None)
        if state is not None:
            state.buffer.close()

    def held_back(self) -> set[TopicPartition]:
        """The topic-partitions to pause: each one read ahead of its partner in event time, or
        holding records that wait for it."""
        now = asyncio.get_running_loop().time()
        held = set()
        for partition, state in self.partitions.items():
            ahead = state.clock.ahead(now)
            if ahead is not None:
                held.add(TopicPartition(self._topic(ahead), partition))
            for signal, waiting in state.fetched.items():
                if waiting:
                    held.add(TopicPartition(self._topic(signal), partition))
        return held

    def _topic(self, signal: Signal) -> str:
        return self.config.kafka.spans_topic if signal == "spans" else self.config.kafka.logs_topic

    def trackers(self, partitions: Sequence[int]) -> dict[int, Mapping[Signal, OffsetTracker]]:
        return {partition: self.partitions[partition].offsets for partition in partitions}

    async def consume(
        self,
        batch: Mapping[TopicPartition, Sequence[KafkaRecord]],
        start_delivery: Callable[[Delivery], Awaitable[None]],
    ) -> None:
        """Decode a poll's records (with those still waiting from earlier polls) in event-time
        order, as far as each partition's clock admits, then emit the traces whose window is over."""
        now = asyncio.get_running_loop().time()
        wall_ms = time.time_ns() // 1_000_000
        limit = self.config.elasticsearch.bulk_max_docs
        work = Delivery()
        for tp, records in batch.items():
            self.state(tp.partition, now).fetched[self._signal(tp.topic)].extend(records)
        self._observe_positions(now)
        for state in list(self.partitions.values()):
            work = await self._consume_admitted(state, now, wall_ms, work, start_delivery)
        self._observe_positions(now)
        for state in self.partitions.values():
            work.outputs += state.buffer.due(state.clock.now_ms(wall_ms, now) / 1000)
            _take_side_outputs(state.buffer, work)
        while len(work.outputs) > limit:
            head, work.outputs = work.outputs[:limit], work.outputs[limit:]
            await start_delivery(Delivery(head))
        if work:
            await start_delivery(work)

    async def _consume_admitted(
        self,
        state: PartitionState,
        now: float,
        wall_ms: int,
        work: Delivery,
        start_delivery: Callable[[Delivery], Awaitable[None]],
    ) -> Delivery:
        """Consume the partition's fetched records, the older of the two topics' next first (spans
        on a tie), until the next one is stamped past the other topic's position by more than the
        slack: one poll can hold many seconds of one topic, and at start-up only one of them.
        Returns the delivery being filled (earlier ones are started as they fill)."""
        limit = self.config.elasticsearch.bulk_max_docs
        fetched, clock = state.fetched, state.clock
        logs, spans = fetched["logs"], fetched["spans"]
        while logs or spans:
            if logs and spans:
                # Both waiting: the older goes first, and is admitted (the other is past it).
                signal: Signal = (
                    "logs" if _event_ms(logs[0], wall_ms) < _event_ms(spans[0], wall_ms) else "spans"
                )
            else:
                signal = "logs" if logs else "spans"
            record = fetched[signal][0]
            # A record stamped ahead of this clock (a skewed agent) must not hold its trace longer.
            event_ms = _event_ms(record, wall_ms)
            if not (logs and spans) and not clock.admits(signal, event_ms, now):
                break
            fetched[signal].popleft()
            self.metrics.records_in.labels(record.topic).inc()
            clock.consumed(signal, event_ms, now)
            self._consume(record, signal, state, event_ms / 1000, work)
            # One fetch decodes into ~10x its bytes of documents: hand them on as they come,
            # so memory holds a few deliveries' worth, not a whole fetch.
            if len(work.outputs) >= limit:
                await start_delivery(work)
                work = Delivery()
            # A record can hold thousands of documents: let heartbeats and acks run between
            # records, or a large poll would outlast the group's session timeout.
            await asyncio.sleep(0)
        return work

    def _observe_positions(self, now: float) -> None:
        """Which topic-partitions have nothing more to read (none behind the end, none waiting to
        be consumed): their clock is the wall clock."""
        for partition, state in self.partitions.items():
            for signal in ("logs", "spans"):
                tp = TopicPartition(self._topic(signal), partition)
                lag = self.lag(tp)
                state.clock.caught_up(signal, lag == 0 and not state.fetched[signal], now)
                if lag is not None:
                    self.metrics.consumer_lag.labels(tp.topic, str(partition)).set(lag)

    def _consume(
        self, record: KafkaRecord, signal: Signal, state: PartitionState, event: float, work: Delivery
    ) -> None:
        """Decode one record into documents, at `event` (its event time, seconds since the epoch);
        what the trace buffer emits joins `work`."""
        tracker, offset, value = state.offsets[signal], record.offset, record.value
        try:
            if signal == "spans":
                request, span_docs = decode_spans(value, self.spans_to_jaeger)
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
            self.red_metrics.observe(span_docs)  # before sampling, so they count every span
            # Parts: each span document, and the record as a whole when Jaeger receives it (once
            # each of its spans' traces is decided: collector/held_exports.py).
            size = len(value) // max(len(span_docs), 1) + DOCUMENT_MEMORY_BYTES
            if request is not None:
                ack = tracker.track(offset, len(span_docs) + 1)
                exports = span_exports(request, ack)
                if not exports:
                    work.released.append(ack)  # no span: nothing for Jaeger
                for span_doc, export in zip(span_docs, exports, strict=True):
                    out += state.buffer.add_span(span_doc, ack, size, event, export)
            else:
                ack = tracker.track(offset, len(span_docs))
                for span_doc in span_docs:
                    out += state.buffer.add_span(span_doc, ack, size, event)
        else:
            ack = tracker.track(offset, len(log_docs))
            size = len(value) // max(len(log_docs), 1) + DOCUMENT_MEMORY_BYTES
            for log_doc in log_docs:
                out += state.buffer.add_log(log_doc, ack, size, event)
        _take_side_outputs(state.buffer, work)

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

    def let_go(self, partitions: Sequence[int]) -> Delivery:
        """Before the partitions go to another member (or the process stops): emit the traces whose
        window is over, and let go of those still in it, unemitted. Their records stay
        unacknowledged, so uncommitted, and whoever reads the partitions next replays them whole:
        a trace is never correlated or sampled in two parts by two owners."""
        now = asyncio.get_running_loop().time()
        wall_ms = time.time_ns() // 1_000_000
        work = Delivery()
        released = 0
        for partition in partitions:
            state = self.partitions[partition]
            work.outputs += state.buffer.due(state.clock.now_ms(wall_ms, now) / 1000)
            _take_side_outputs(state.buffer, work)
            released += state.buffer.let_go()
        if released:
            log.info(
                "traces still in their window left to the partitions' next reader",
                extra={"traces": released, "partitions": list(partitions)},
            )
        return work

    def sync_metrics(self) -> None:
        """Move what correlation counted since the last call into the metrics."""
        s, last = self.stats, self._synced
        m = self.metrics
        service_logs, service_traces = s.fold()
        for (service, result), count in service_logs.items():
            m.correlation.labels(result).inc(count)
            m.service_log_correlation.labels(self._service_label(service), result).inc(count)
        for (service, logs), count in service_traces.items():
            m.service_traces.labels(self._service_label(service), logs).inc(count)
        m.correlation.labels("untraced").inc(s.logs_untraced - last.logs_untraced)
        m.late_arrivals.labels("span").inc(s.late_spans - last.late_spans)
        m.late_arrivals.labels("log").inc(s.late_logs - last.late_logs)
        m.evicted_traces.inc(s.evicted - last.evicted)
        m.repaired_logs.inc(s.logs_repaired - last.logs_repaired)
        m.log_events_dropped.inc(s.log_events_dropped - last.log_events_dropped)
        m.unrepairable_logs.inc(s.logs_unrepairable - last.logs_unrepairable)
        self._synced = Stats(**{k: v for k, v in vars(s).items() if not isinstance(v, Counter)})
        m.buffered_traces.set(self.budget.traces)
        m.buffered_bytes.set(self.budget.bytes)

    def _service_label(self, service: str) -> str:
        """A service as a label value: a bounded number of them, the rest counted together."""
        service = service or "unknown"
        if service not in self._service_labels:
            if len(self._service_labels) >= MAX_SERVICE_LABELS:
                return "_overflow"
            self._service_labels.add(service)
        return service


def _event_ms(record: KafkaRecord, wall_ms: int) -> int:
    """A record's event time: its timestamp, or the wall clock if it has none or is stamped later."""
    return record.timestamp if 0 < record.timestamp <= wall_ms else wall_ms


def _take_side_outputs(buffer: TraceBuffer[RecordAck], work: Delivery) -> None:
    """What the buffer completed beside documents: parts dropped by sampling (done without a
    document) and spans records ready for Jaeger."""
    if buffer.released:
        work.released += buffer.released
        buffer.released = []
    if buffer.exports:
        for held in buffer.exports:
            outgoing = held.outgoing()
            if outgoing is None:  # every span of the record was dropped
                work.released.append(held.ack)
            else:
                work.span_records.append((outgoing, held.ack))
        buffer.exports = []
