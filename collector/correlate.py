"""Grouping a partition's spans and logs by trace, like the OpenTelemetry Collector's groupbytrace.

A trace is held for `wait_seconds` after its first item, then emitted whole: its spans, its logs
enriched from their spans, and a summary document. Pending traces are bounded (count and bytes,
shared by all partitions through one Budget); over the bound the oldest trace is emitted early: the
oldest of any partition, each measured in its own partition's event time (a partition read ahead of
the others must not emit its newest traces, still missing items, while the others hold old ones).
Emitted traces stay in a bounded cache of recent traces: a late span is indexed at once and
updates the summary, a late log is enriched from the cached spans, and the summary is written
again under the same id (a full document, so no scripted update is needed) at the next `due()`:
once per poll however many late items it had, not once per item.

A late span can also change how the trace's logs are joined (collector/log_correlation.py): the
recent-trace cache keeps the log documents not joined to their own span (bounded in number by a
RepairBudget shared by all partitions), and a late span writes again each one whose join it changed.

Log documents of a traced line carry an external version too, 1 + the spans known when the document
was built: a repaired document outranks the one it repairs, however the writes are ordered, and
a replay of the earlier one is refused as superseded instead of undoing the repair.

Deliveries run concurrently and retry, so an older version of a summary can reach Elasticsearch
after a newer one. Each version therefore carries an external version that only grows as the
summary learns more (spans first, then logs: TraceSummary.version): Elasticsearch keeps the version that
knew most, whatever order the writes arrive in, and a summary rebuilt from a partial replay after
a restart or a rebalance loses against the fuller one already indexed.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Generic

from typing_extensions import TypeVar

from tether.collector.documents import LogDoc, SpanDoc
from tether.collector.held_exports import HeldExport, SpanExport, add_log_events
from tether.collector.log_correlation import INFERRED, SPAN, Joined, apply, apply_span, join
from tether.collector.sampling import UNKNOWN_TRACE, Decision, Sampler, SamplingCounts
from tether.collector.span_inference import SpanIndex
from tether.collector.trace_summary import SpanInfo, TraceSummary, worst_level
from tether.schemas.indices import LOGS_ALIAS, SPANS_ALIAS, TRACES_ALIAS

# What stands for a document's Kafka record, to acknowledge once the document is indexed: the
# collector's RecordAck. The buffer only carries it from input to output and never looks inside,
# so callers that acknowledge nothing (tests, benchmarks) may pass anything, such as the offset.
Ack = TypeVar("Ack", default=object)


@dataclass(slots=True)  # not frozen: a frozen init costs measurably more, once per document
class Output(Generic[Ack]):
    """One document to index; `ack` is the acknowledgement of the Kafka record it completes, if any."""

    alias: str
    doc_id: str
    timestamp_ns: int
    source: dict[str, Any]
    ack: Ack | None
    head: bytes | None = None  # LogDoc.head: the document's fields `source` does not hold
    # An external version (trace summaries, traced logs): Elasticsearch keeps the highest written.
    version: int | None = None


def summary_output(summary: TraceSummary) -> Output[Any]:
    """The summary's document; it completes no record, so its ack fits every buffer's outputs."""
    if not summary.index_ns:  # a logs-only first version fixes the day of its earliest log
        summary.index_ns = summary.timestamp_ns or 1
    return Output(
        TRACES_ALIAS, summary.trace_id, summary.index_ns, summary.document(), None, version=summary.version
    )


# An item whose own time (a span's end, a line's timestamp) is older than its record's by more than
# this (or two windows, if longer) starts a trace sampling keeps as `unknown_trace`: SDK batching
# and the agent's own delay are seconds, so it is most likely a late item of a trace decided before
# (forgotten, or before a restart). Spooled by an agent during a Kafka outage, it is kept too.
LATE_AFTER_SECONDS = 30.0


@dataclass
class _Pending(Generic[Ack]):
    summary: TraceSummary
    spans: list[tuple[SpanDoc, Ack, SpanExport[Ack] | None]] = field(default_factory=list)
    logs: list[tuple[LogDoc, Ack]] = field(default_factory=list)
    deadline: float = 0.0
    size: int = 0
    # Its first item happened long before its record was sent: likely the late tail of a trace
    # this collector no longer remembers (or never saw: a restart). Sampling keeps it.
    late_unknown: bool = False


@dataclass(slots=True)
class _Repairable:
    """A log document of an emitted trace that a late span may join better."""

    doc: LogDoc
    service: str  # the line's own
    joined: Joined


@dataclass(slots=True)  # one per recent trace
class _Recent:
    summary: TraceSummary
    decision: Decision | None  # tail sampling's, followed by late items (None: sampling is off)
    repairable: list[_Repairable] = field(default_factory=list)
    index: SpanIndex | None = None  # rebuilt after a late span

    @property
    def dropped(self) -> bool:
        return self.decision is not None and not self.decision.keep


class Budget:
    """Pending traces and bytes across every partition of one collector, and the partitions' buffers
    that share them (to emit the oldest trace of any when over the bound)."""

    def __init__(self, max_traces: int, max_bytes: int) -> None:
        self.max_traces = max_traces
        self.max_bytes = max_bytes
        self.traces = 0
        self.bytes = 0
        self.buffers: list[TraceBuffer[Any]] = []

    @property
    def exceeded(self) -> bool:
        return self.traces > self.max_traces or self.bytes > self.max_bytes

    def oldest(self, adding: TraceBuffer[Any]) -> TraceBuffer[Any] | None:
        """The buffer whose oldest pending trace has waited longest in its own partition's event time
        (its latest item's), but for the trace `adding` just took: None if there is none."""
        chosen, longest = None, 0.0
        for buffer in self.buffers:
            pending = buffer._pending
            if len(pending) > (1 if buffer is adding else 0):
                waited = buffer.now - next(iter(pending.values())).deadline
                if chosen is None or waited > longest:
                    chosen, longest = buffer, waited
        return chosen


class RecentBudget:
    """Emitted traces remembered for late items across every partition of one collector: the
    cache grows with the partitions a collector is assigned unless the bound is the collector's."""

    def __init__(self, max_traces: int) -> None:
        self.max_traces = max_traces
        self.traces = 0


class RepairBudget:
    """Log documents kept for repair across every partition of one collector."""

    def __init__(self, max_logs: int) -> None:
        self.max_logs = max_logs
        self.logs = 0


@dataclass
class Stats:
    """What correlation counted. Traced lines are counted once, per (own service, correlation), in
    `service_logs`, which `fold()` moves into the totals (the metrics take it from there)."""

    logs_untraced: int = 0
    logs_repaired: int = 0  # indexed log documents written again, joined better by a late span
    logs_unrepairable: int = 0  # not kept for repair: the repair budget was full
    late_spans: int = 0
    late_logs: int = 0
    evicted: int = 0
    log_events_dropped: int = 0  # logs beyond jaeger.max_log_events_per_span, not sent as span events
    service_logs: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (root service, "yes"/"no"): traces emitted, and whether any line carried their id
    service_traces: Counter[tuple[str, str]] = field(default_factory=Counter)
    correlations: Counter[str] = field(default_factory=Counter)  # folded totals by correlation

    def fold(self) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
        """Take the per-service counts since the last fold, adding them to the totals."""
        logs, traces = self.service_logs, self.service_traces
        for (_, correlation), count in logs.items():
            self.correlations[correlation] += count
        self.service_logs, self.service_traces = Counter(), Counter()
        return logs, traces

    def logs(self, correlation: str) -> int:
        """Traced lines joined as `correlation` so far, folded or not."""
        pending = sum(count for (_, c), count in self.service_logs.items() if c == correlation)
        return self.correlations[correlation] + pending

    def summary(self) -> dict[str, int]:
        """Every count, for the log line at stop."""
        counts = {key: value for key, value in vars(self).items() if isinstance(value, int)}
        return counts | {f"logs_{c}": self.logs(c) for c in ("span", "inferred", "trace", "none")}


class TraceBuffer(Generic[Ack]):
    """The traces of one partition (the same number in both topics).

    Each span or log is added with what stands for its Kafka record (`offset`: the collector
    passes the record's RecordAck), handed back as the `ack` of every Output built from it. Two
    more things come out beside the outputs, for the caller to take after each call: `released`,
    the acks of parts that end without a document (tail sampling dropped their trace), and
    `exports`, the spans records whose every span is decided, ready for Jaeger.
    """

    def __init__(
        self,
        wait_seconds: float,
        budget: Budget,
        max_recent_traces: int,
        stats: Stats,
        *,
        partition: int,
        repair: RepairBudget | None = None,
        recent: RecentBudget | None = None,
        inference_skew_ns: int = 1_000_000,
        sampler: Sampler | None = None,
        sampling_counts: SamplingCounts | None = None,
        max_log_events: int = 0,
    ) -> None:
        self.partition = partition
        self.wait_seconds = wait_seconds
        self.budget = budget
        budget.buffers.append(self)
        self.now = 0.0  # the latest event time an item was held at: this partition's position
        # shared by the collector's partitions (`recent`), or this buffer's own
        self.recent = recent if recent is not None else RecentBudget(max_recent_traces)
        self.stats = stats
        self.repair = repair if repair is not None else RepairBudget(0)
        self.inference_skew_ns = inference_skew_ns
        self.sampler = sampler if sampler is not None and sampler.enabled else None
        self.sampling_counts = sampling_counts
        self.max_log_events = max_log_events
        self.released: list[Ack] = []
        self.exports: list[HeldExport[Ack]] = []
        self._pending: OrderedDict[str, _Pending[Ack]] = OrderedDict()
        self._recent: OrderedDict[str, _Recent] = OrderedDict()
        self._repairable: OrderedDict[str, None] = OrderedDict()  # recent traces keeping logs, oldest first
        self._stale: dict[str, TraceSummary] = {}  # recent summaries changed by late items, to rewrite

    @property
    def pending_traces(self) -> int:
        return len(self._pending)

    def add_span(
        self, doc: SpanDoc, offset: Ack, size: int, now: float, export: SpanExport[Ack] | None = None
    ) -> list[Output[Ack]]:
        recent = self._recent.get(doc.trace_id)
        if recent is not None:
            return self._late_span(recent, doc, offset, export)
        pending = self._hold(doc.trace_id, size, now, doc.timestamp_ns + doc.duration_ns)
        pending.summary.add_span(doc)
        pending.spans.append((doc, offset, export))
        return self._evict()

    def add_log(self, doc: LogDoc, offset: Ack, size: int, now: float) -> list[Output[Ack]]:
        if not doc.trace_id:  # never sampled away
            self.stats.logs_untraced += 1
            doc.source["tether"]["correlation"] = "untraced"
            return [Output(LOGS_ALIAS, doc.doc_id, doc.timestamp_ns, doc.source, offset, doc.head)]
        recent = self._recent.get(doc.trace_id)
        if recent is not None:
            return self._late_log(recent, doc, offset)
        pending = self._hold(doc.trace_id, size, now, doc.timestamp_ns)
        pending.summary.add_log(doc)
        pending.logs.append((doc, offset))
        return self._evict()

    def due(self, now: float, everything: bool = False) -> list[Output[Ack]]:
        """Emit the traces whose window is over (all of them with `everything`), and the summaries
        late items changed since the last call."""
        out = [summary_output(summary) for summary in self._stale.values()]
        self._stale.clear()
        while self._pending:
            trace_id, pending = next(iter(self._pending.items()))
            if not everything and pending.deadline > now:
                break  # in first-seen order, so (but for skew between topics) every later one is younger
            out += self._emit(trace_id)
        return out

    def let_go(self) -> int:
        """Forget the traces still in their window, unemitted (their records stay unacknowledged:
        the partition's next reader replays them); return how many."""
        released = len(self._pending)
        for pending in self._pending.values():
            self.budget.traces -= 1
            self.budget.bytes -= pending.size
        self._pending.clear()
        return released

    def _hold(self, trace_id: str, size: int, now: float, happened_ns: int) -> _Pending[Ack]:
        if now > self.now:
            self.now = now
        pending = self._pending.get(trace_id)
        if pending is None:
            late = happened_ns and now - happened_ns / 1e9 > max(2 * self.wait_seconds, LATE_AFTER_SECONDS)
            pending = self._pending[trace_id] = _Pending(
                TraceSummary(trace_id), deadline=now + self.wait_seconds, late_unknown=bool(late)
            )
            self.budget.traces += 1
        pending.size += size
        self.budget.bytes += size
        return pending

    def _evict(self) -> list[Output[Ack]]:
        """Over the shared bound: emit the trace that waited longest, of whichever partition. Its
        outputs come back here; what else it completes waits in its own buffer's `released` and
        `exports` (the collector takes those of every buffer after each poll)."""
        out: list[Output[Ack]] = []
        budget = self.budget
        while budget.exceeded:
            oldest = budget.oldest(self)
            if oldest is None:
                break
            oldest.stats.evicted += 1
            out += oldest._emit(next(iter(oldest._pending)))
        return out

    def _emit(self, trace_id: str) -> list[Output[Ack]]:
        pending = self._pending.pop(trace_id)
        self.budget.traces -= 1
        self.budget.bytes -= pending.size
        summary = pending.summary
        root = summary.root()
        self.stats.service_traces[(root.service if root else "", "yes" if pending.logs else "no")] += 1
        # Joined before sampling decides: correlation health counts every traced line.
        index = SpanIndex(summary, self.inference_skew_ns)
        logs_out: list[Output[Ack]] = []
        repairable: list[_Repairable] = []
        by_span: dict[str, list[LogDoc]] = {}
        spans, service_logs, version = summary.spans, self.stats.service_logs, 1 + len(summary.spans)
        # The "span" and "parent" fields of the lines joined to each span, shared by them: a log's
        # fields are replaced when its join changes, never changed in place (log_correlation.py).
        span_fields: dict[str, tuple[dict[str, Any], dict[str, str] | None]] = {}
        for doc, offset in pending.logs:
            source = doc.source
            info = spans.get(doc.span_id) if doc.span_id else None
            if info is not None and "inference" not in source["tether"] and "parent" not in source:
                # A line naming a span that arrived, on its first emission: apply_span, inlined
                # (the common case, once per line; the fields it would reset are not there yet).
                joined_to = doc.span_id
                service = source["service"]["name"] if "service" in source else ""
                source["tether"]["correlation"] = SPAN
                fields = span_fields.get(joined_to)
                if fields is None:
                    fields = span_fields[joined_to] = _span_fields(joined_to, info)
                source["span"], parent = fields
                if parent is not None:
                    source["parent"] = parent
                if not service and info.service:
                    source["service"] = {"name": info.service}
                service_logs[(service, SPAN)] += 1
                logs_out.append(
                    Output(LOGS_ALIAS, doc.doc_id, doc.timestamp_ns, source, offset, doc.head, version)
                )
            else:
                output, joined_to, kept = self._joined(doc, offset, summary, index)
                logs_out.append(output)
                if kept is not None:
                    repairable.append(kept)
            if joined_to:
                joined_logs = by_span.get(joined_to)
                if joined_logs is None:
                    by_span[joined_to] = [doc]
                else:
                    joined_logs.append(doc)
        decision = None
        if self.sampler is not None:
            if pending.late_unknown:
                decision = Decision(True, UNKNOWN_TRACE, root.service if root else "")
            else:
                decision = self.sampler.decide(summary, int(pending.deadline * 1_000_000_000))
            if self.sampling_counts is not None:
                self.sampling_counts.count_trace(decision, len(pending.spans), len(pending.logs))
        # The index is kept only for the logs kept for repair; a late log rebuilds it if needed.
        recent = _Recent(summary, decision, index=index if repairable else None)
        self._remember(trace_id, recent)
        if recent.dropped:
            self.released += [offset for _, offset, _ in pending.spans]
            self.released += [offset for _, offset in pending.logs]
            for _, _, export in pending.spans:
                if export is not None and export.decided(keep=False):
                    self.exports.append(export.held)
            return []
        out: list[Output[Ack]] = []
        for span_doc, span_offset, export in pending.spans:
            logs = by_span.get(span_doc.span_id)
            if logs:
                _count_logs(span_doc, logs)
            self._export(export, logs)
            out.append(
                Output(
                    SPANS_ALIAS,
                    span_doc.doc_id,
                    span_doc.timestamp_ns,
                    span_doc.source,
                    span_offset,
                    span_doc.head,
                )
            )
        out += logs_out
        if decision is not None:
            summary.sampling_policy = decision.policy
            for output in out:
                _mark_sampled(output.source, decision.policy)
        out.append(summary_output(summary))
        if repairable:
            self._keep_for_repair(trace_id, recent, repairable)
        return out

    def _remember(self, trace_id: str, recent: _Recent) -> None:
        budget = self.recent
        if trace_id not in self._recent:
            budget.traces += 1
        self._recent[trace_id] = recent
        # Over the collector's bound, this partition forgets its own oldest: the partitions that
        # emit most make the room, and none is emptied by another's burst of traces.
        while budget.traces > budget.max_traces and self._recent:
            forgotten, old = self._recent.popitem(last=False)
            budget.traces -= 1
            self._forget_repairable(forgotten, old, dropped=False)

    def close(self) -> None:
        """Its partition is revoked: give what it holds back to the shared bounds, and leave them."""
        self.forget_recent()
        self.let_go()
        if self in self.budget.buffers:
            self.budget.buffers.remove(self)

    def forget_recent(self) -> None:
        """Give this partition's recent traces back to the shared bound (its partition is revoked)."""
        for trace_id, recent in list(self._recent.items()):
            self._forget_repairable(trace_id, recent, dropped=False)
        self.recent.traces -= len(self._recent)
        self._recent.clear()

    def _export(self, export: SpanExport[Ack] | None, logs: list[LogDoc] | None) -> None:
        """A kept span's part of its record's Jaeger export, with its logs as span events."""
        if export is None:
            return
        if logs:
            self.stats.log_events_dropped += add_log_events(export.span, logs, self.max_log_events)
        if export.decided(keep=True):
            self.exports.append(export.held)

    def _late_span(
        self, recent: _Recent, doc: SpanDoc, offset: Ack, export: SpanExport[Ack] | None
    ) -> list[Output[Ack]]:
        """A span of an emitted trace: it follows the trace's sampling decision; if kept, it is
        indexed now, rejoins the trace's kept logs, and the summary is written again."""
        self.stats.late_spans += 1
        self._recent.move_to_end(doc.trace_id)
        if recent.decision is not None and self.sampling_counts is not None:
            self.sampling_counts.count_items(recent.decision, "spans")
        if recent.dropped:
            self.released.append(offset)
            if export is not None and export.decided(keep=False):
                self.exports.append(export.held)
            return []
        self._stale[doc.trace_id] = recent.summary
        out: list[Output[Ack]] = []
        logs: list[LogDoc] = []
        if recent.summary.add_span(doc):  # not a replay
            recent.index = None
            out = self._repair(recent)
            logs = [kept.doc for kept in recent.repairable if kept.joined.span_id == doc.span_id]
            _count_logs(doc, logs)
        self._export(export, logs)
        if recent.decision is not None:
            _mark_sampled(doc.source, recent.decision.policy)
        out.append(Output(SPANS_ALIAS, doc.doc_id, doc.timestamp_ns, doc.source, offset, doc.head))
        return out

    def _late_log(self, recent: _Recent, doc: LogDoc, offset: Ack) -> list[Output[Ack]]:
        """A log of an emitted trace: it follows the trace's sampling decision; if kept, it is
        joined to what the trace had and the summary is written again."""
        self.stats.late_logs += 1
        self._recent.move_to_end(doc.trace_id)
        if recent.decision is not None and self.sampling_counts is not None:
            self.sampling_counts.count_items(recent.decision, "logs")
        if recent.dropped:
            self.released.append(offset)
            return []
        recent.summary.add_log(doc)
        self._stale[doc.trace_id] = recent.summary
        if recent.index is None:
            recent.index = SpanIndex(recent.summary, self.inference_skew_ns)
        output, _, repairable = self._joined(doc, offset, recent.summary, recent.index)
        if repairable is not None:
            self._keep_for_repair(doc.trace_id, recent, [repairable])
        if recent.decision is not None:
            _mark_sampled(doc.source, recent.decision.policy)
        return [output]

    def _joined(
        self, doc: LogDoc, offset: Ack, summary: TraceSummary, index: SpanIndex
    ) -> tuple[Output[Ack], str, _Repairable | None]:
        """The log's document joined to its trace, the span it is joined to ("" if none), and what
        to keep of it for a repair (None once it is joined to its own span: nothing can do better)."""
        source = doc.source
        service = source["service"]["name"] if "service" in source else ""
        span_id = doc.span_id
        info = summary.spans.get(span_id) if span_id else None
        repairable = None
        if info is not None:  # the common case, kept short
            apply_span(doc, span_id, info, service, SPAN)
            correlation = SPAN
        else:
            joined = join(doc, summary, index, service)
            apply(doc, joined, summary, service)
            correlation, span_id = joined.correlation, joined.span_id
            repairable = _Repairable(doc, service, joined)
        self.stats.service_logs[(service, correlation)] += 1
        output = Output(
            LOGS_ALIAS, doc.doc_id, doc.timestamp_ns, source, offset, doc.head, 1 + len(summary.spans)
        )
        return output, span_id if correlation is SPAN or correlation == INFERRED else "", repairable

    def _repair(self, recent: _Recent) -> list[Output[Ack]]:
        """Join the kept logs again after a late span; write each whose join changed (no ack: the
        record that carried it was acknowledged with its first version)."""
        if not recent.repairable:
            return []
        summary = recent.summary
        index = recent.index = SpanIndex(summary, self.inference_skew_ns)
        out: list[Output[Ack]] = []
        for kept in recent.repairable:
            joined = join(kept.doc, summary, index, kept.service)
            if joined == kept.joined:
                continue
            kept.joined = joined
            doc = kept.doc
            apply(doc, joined, summary, kept.service)
            self.stats.logs_repaired += 1
            out.append(
                Output(
                    LOGS_ALIAS,
                    doc.doc_id,
                    doc.timestamp_ns,
                    doc.source,
                    None,
                    doc.head,
                    1 + len(summary.spans),
                )
            )
        return out

    def _keep_for_repair(self, trace_id: str, recent: _Recent, logs: list[_Repairable]) -> None:
        budget = self.repair
        while budget.logs + len(logs) > budget.max_logs and self._repairable:
            oldest = next(iter(self._repairable))
            self._forget_repairable(oldest, self._recent[oldest], dropped=True)
        room = max(budget.max_logs - budget.logs, 0)
        self.stats.logs_unrepairable += max(len(logs) - room, 0)
        logs = logs[:room]
        if logs:
            recent.repairable += logs
            budget.logs += len(logs)
            self._repairable[trace_id] = None

    def _forget_repairable(self, trace_id: str, recent: _Recent, *, dropped: bool) -> None:
        """Stop keeping a recent trace's logs: it left the cache, or (`dropped`) the budget is full."""
        if trace_id not in self._repairable:
            return
        del self._repairable[trace_id]
        self.repair.logs -= len(recent.repairable)
        if dropped:
            self.stats.logs_unrepairable += len(recent.repairable)
        recent.repairable = []


def _span_fields(span_id: str, info: SpanInfo) -> tuple[dict[str, Any], dict[str, str] | None]:
    """A joined line's "span" and "parent" fields (apply_span's)."""
    span = {
        "id": span_id,
        "name": info.name,
        "kind": info.kind,
        "status": info.status,
        "duration": {"us": info.duration_us},
    }
    return span, {"id": info.parent_id} if info.parent_id else None


def _count_logs(doc: SpanDoc, logs: list[LogDoc]) -> None:
    """A span document's logs: how many, by level, the worst (for "spans that logged errors")."""
    if not logs:
        return
    levels: dict[str, int] = {}
    for log_doc in logs:
        level = log_doc.level or "unknown"
        levels[level] = levels.get(level, 0) + 1
    span = doc.source["span"]
    span["log_count"] = len(logs)
    span["logs_by_level"] = levels
    worst = worst_level(levels)
    if worst:
        span["worst_log_level"] = worst


def _mark_sampled(source: dict[str, Any], policy: str) -> None:
    """Kept by tail sampling: say which policy kept the document's trace."""
    source.setdefault("tether", {})["sampling"] = {"policy": policy}
