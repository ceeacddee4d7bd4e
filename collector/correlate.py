"""Grouping a partition's spans and logs by trace, like the OpenTelemetry Collector's groupbytrace.

A trace is held for `wait_seconds` after its first item, then emitted whole: its spans, its logs
enriched from their spans, and a summary document. Pending traces are bounded (count and bytes,
shared by all partitions through one Budget); over the bound the oldest trace is emitted early.
Emitted traces stay in a bounded cache of recent traces: a late span is indexed at once and
updates the summary, a late log is enriched from the cached spans, and the summary is written
again under the same id (a full document, so no scripted update is needed) at the next `due()`:
once per poll however many late items it had, not once per item.

Deliveries run concurrently and retry, so an older version of a summary can reach Elasticsearch
after a newer one. Each version therefore carries an external version that only grows as the
summary learns more (its span count plus its log count): Elasticsearch keeps the version that
knew most, whatever order the writes arrive in, and a summary rebuilt from a partial replay after
a restart or a rebalance loses against the fuller one already indexed.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Generic

from typing_extensions import TypeVar

from tether.collector.documents import LogDoc, SpanDoc, iso_timestamp
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
    # An external version (trace summaries): Elasticsearch keeps the highest one written.
    version: int | None = None


@dataclass(slots=True)  # not frozen: a frozen init costs measurably more, once per document
class SpanInfo:
    name: str
    kind: str
    status: str
    duration_us: int
    parent_id: str
    service: str

    @classmethod
    def of(cls, doc: SpanDoc) -> SpanInfo:
        span = doc.source["span"]
        return cls(
            span["name"],
            span["kind"],
            span["status"],
            span["duration"]["us"],
            doc.source.get("parent", {}).get("id", ""),
            doc.source.get("service", {}).get("name", ""),
        )


@dataclass
class TraceSummary:
    """What is known about one trace; `document()` is its summary in tether-traces."""

    trace_id: str
    start_ns: int = 0
    end_ns: int = 0
    spans: dict[str, SpanInfo] = field(default_factory=dict)
    roots: list[tuple[int, str]] = field(default_factory=list)  # (start, span id) of spans without parent
    error_count: int = 0
    logs_by_level: Counter[str] = field(default_factory=Counter)
    services: set[str] = field(default_factory=set)
    first_log_ns: int = 0  # the earliest log timestamp: the trace's time while no span is known
    index_ns: int = 0  # fixed at first emission, so later versions land in the same daily index

    def add_span(self, doc: SpanDoc) -> None:
        if doc.span_id in self.spans:
            return  # a replay
        info = SpanInfo.of(doc)
        self.spans[doc.span_id] = info
        end = doc.timestamp_ns + doc.source["event"]["duration"]
        self.start_ns = min(self.start_ns or doc.timestamp_ns, doc.timestamp_ns)
        self.end_ns = max(self.end_ns, end)
        self.error_count += info.status == "ERROR"
        if info.service:
            self.services.add(info.service)
        if not info.parent_id:
            self.roots.append((doc.timestamp_ns, doc.span_id))

    def add_log(self, doc: LogDoc) -> None:
        self.logs_by_level[doc.level or "unknown"] += 1
        if doc.timestamp_ns and (not self.first_log_ns or doc.timestamp_ns < self.first_log_ns):
            self.first_log_ns = doc.timestamp_ns

    @property
    def version(self) -> int:
        """Grows with every span and log the summary learns (a replayed span is not counted twice):
        the newer of two versions of one collector, and the fuller of two rebuilt ones."""
        return len(self.spans) + self.logs_by_level.total()

    @property
    def timestamp_ns(self) -> int:
        """The trace's start; until a span is known, its earliest log (0 when neither has a time)."""
        return self.start_ns or self.first_log_ns

    def root(self) -> SpanInfo | None:
        """The earliest span without a parent; until one is seen, the first span stands in."""
        root = self.spans.get(min(self.roots)[1]) if self.roots else None
        if root is None and self.spans:
            root = next(iter(self.spans.values()))
        return root

    def document(self) -> dict[str, Any]:
        root = self.root()
        document: dict[str, Any] = {
            "@timestamp": iso_timestamp(self.timestamp_ns),
            "trace": {
                "id": self.trace_id,
                # only what is known: no span yet, no root service or operation
                "root": {"service": root.service, "operation": root.name} if root else {},
                "start": iso_timestamp(self.start_ns),
                "end": iso_timestamp(self.end_ns),
                "duration": {"us": max(self.end_ns - self.start_ns, 0) // 1000},
                "span_count": len(self.spans),
                "error_count": self.error_count,
                "log_count": self.logs_by_level.total(),
                "logs_by_level": dict(self.logs_by_level),
                "services": sorted(self.services),
                "status": "ERROR" if self.error_count else "OK",
                "complete": bool(self.roots),
            },
        }
        if root is not None and not root.service:
            del document["trace"]["root"]["service"]
        if root is not None and root.service:
            document["service"] = {"name": root.service}
        return document

    def output(self) -> Output[Any]:  # completes no record: its ack fits every buffer's outputs
        if not self.index_ns:  # a logs-only first version fixes the day of its earliest log
            self.index_ns = self.timestamp_ns or 1
        return Output(TRACES_ALIAS, self.trace_id, self.index_ns, self.document(), None, version=self.version)


@dataclass
class _Pending(Generic[Ack]):
    summary: TraceSummary
    spans: list[tuple[SpanDoc, Ack]] = field(default_factory=list)
    logs: list[tuple[LogDoc, Ack]] = field(default_factory=list)
    deadline: float = 0.0
    size: int = 0


class Budget:
    """Pending traces and bytes across every partition of one collector."""

    def __init__(self, max_traces: int, max_bytes: int) -> None:
        self.max_traces = max_traces
        self.max_bytes = max_bytes
        self.traces = 0
        self.bytes = 0

    @property
    def exceeded(self) -> bool:
        return self.traces > self.max_traces or self.bytes > self.max_bytes


@dataclass
class Stats:
    logs_correlated: int = 0  # logs whose span was found
    logs_trace_only: int = 0  # logs whose trace was known, but not their span
    logs_uncorrelated: int = 0  # traced logs with nothing known about their trace
    logs_untraced: int = 0
    late_spans: int = 0
    late_logs: int = 0
    evicted: int = 0


class TraceBuffer(Generic[Ack]):
    """The traces of one partition (the same number in both topics).

    Each span or log is added with what stands for its Kafka record (`offset`: the collector
    passes the record's RecordAck), handed back as the `ack` of every Output built from it.
    """

    def __init__(
        self, wait_seconds: float, budget: Budget, max_recent_traces: int, stats: Stats, *, partition: int
    ) -> None:
        self.partition = partition
        self.wait_seconds = wait_seconds
        self.budget = budget
        self.max_recent_traces = max_recent_traces
        self.stats = stats
        self._pending: OrderedDict[str, _Pending[Ack]] = OrderedDict()
        self._recent: OrderedDict[str, TraceSummary] = OrderedDict()
        self._stale: dict[str, TraceSummary] = {}  # recent summaries changed by late items, to rewrite

    @property
    def pending_traces(self) -> int:
        return len(self._pending)

    def add_span(self, doc: SpanDoc, offset: Ack, size: int, now: float) -> list[Output[Ack]]:
        recent = self._recent.get(doc.trace_id)
        if recent is not None:  # late: index now, write the summary again
            self.stats.late_spans += 1
            recent.add_span(doc)
            self._recent.move_to_end(doc.trace_id)
            self._stale[doc.trace_id] = recent
            return [Output(SPANS_ALIAS, doc.doc_id, doc.timestamp_ns, doc.source, offset)]
        pending = self._hold(doc.trace_id, size, now)
        pending.summary.add_span(doc)
        pending.spans.append((doc, offset))
        return self._evict()

    def add_log(self, doc: LogDoc, offset: Ack, size: int, now: float) -> list[Output[Ack]]:
        if not doc.trace_id:
            self.stats.logs_untraced += 1
            doc.source["tether"]["correlation"] = "untraced"
            return [Output(LOGS_ALIAS, doc.doc_id, doc.timestamp_ns, doc.source, offset, doc.head)]
        recent = self._recent.get(doc.trace_id)
        if recent is not None:  # late: enrich from what the trace had, write the summary again
            self.stats.late_logs += 1
            recent.add_log(doc)
            self._recent.move_to_end(doc.trace_id)
            self._stale[doc.trace_id] = recent
            return [self._enriched(doc, offset, recent)]
        pending = self._hold(doc.trace_id, size, now)
        pending.summary.add_log(doc)
        pending.logs.append((doc, offset))
        return self._evict()

    def due(self, now: float, everything: bool = False) -> list[Output[Ack]]:
        """Emit the traces whose window is over (all of them with `everything`), and the summaries
        late items changed since the last call."""
        out = [summary.output() for summary in self._stale.values()]
        self._stale.clear()
        while self._pending:
            trace_id, pending = next(iter(self._pending.items()))
            if not everything and pending.deadline > now:
                break  # in first-seen order, so every later one is younger
            out += self._emit(trace_id)
        return out

    def _hold(self, trace_id: str, size: int, now: float) -> _Pending[Ack]:
        pending = self._pending.get(trace_id)
        if pending is None:
            pending = self._pending[trace_id] = _Pending(
                TraceSummary(trace_id), deadline=now + self.wait_seconds
            )
            self.budget.traces += 1
        pending.size += size
        self.budget.bytes += size
        return pending

    def _evict(self) -> list[Output[Ack]]:
        out: list[Output[Ack]] = []
        while self.budget.exceeded and len(self._pending) > 1:
            self.stats.evicted += 1
            out += self._emit(next(iter(self._pending)))
        return out

    def _emit(self, trace_id: str) -> list[Output[Ack]]:
        pending = self._pending.pop(trace_id)
        self.budget.traces -= 1
        self.budget.bytes -= pending.size
        summary = pending.summary
        out = [Output(SPANS_ALIAS, d.doc_id, d.timestamp_ns, d.source, a) for d, a in pending.spans]
        out += [self._enriched(doc, offset, summary) for doc, offset in pending.logs]
        out.append(summary.output())
        self._recent[trace_id] = summary
        while len(self._recent) > self.max_recent_traces:
            self._recent.popitem(last=False)
        return out

    def _enriched(self, doc: LogDoc, offset: Ack, summary: TraceSummary) -> Output[Ack]:
        source = doc.source
        info = summary.spans.get(doc.span_id) if doc.span_id else None
        if info is not None:
            source["span"].update(
                name=info.name, kind=info.kind, status=info.status, duration={"us": info.duration_us}
            )
            if info.parent_id:
                source["parent"] = {"id": info.parent_id}
            if info.service and "service" not in source:
                source["service"] = {"name": info.service}
            source["tether"]["correlation"] = "span"
            self.stats.logs_correlated += 1
        elif summary.spans:
            root = summary.root()
            if root is not None and root.service and "service" not in source:
                source["service"] = {"name": root.service}
            source["tether"]["correlation"] = "trace"
            self.stats.logs_trace_only += 1
        else:
            source["tether"]["correlation"] = "none"
            self.stats.logs_uncorrelated += 1
        return Output(LOGS_ALIAS, doc.doc_id, doc.timestamp_ns, source, offset, doc.head)
