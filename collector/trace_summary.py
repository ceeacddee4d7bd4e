"""What the collector knows of one trace: its spans (the facts correlation needs), its logs by level,
and the summary document written to tether-traces."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.collector.documents import LogDoc, SpanDoc, iso_timestamp

# log.level names from the least to the most severe (collector/documents.py document_level)
LEVEL_ORDER = ("trace", "debug", "info", "warn", "error", "fatal")
_SEVERITY = {level: rank for rank, level in enumerate(LEVEL_ORDER)}

# Span ids listed in a summary whose parent never arrived; the count is always whole.
MAX_LISTED_ORPHANS = 20


def worst_level(levels: Mapping[str, int]) -> str:
    """The most severe level of `levels` ("" when none is a known level)."""
    known = [level for level in levels if level in _SEVERITY]
    return max(known, key=_SEVERITY.__getitem__) if known else ""


@dataclass(slots=True)  # not frozen: a frozen init costs measurably more, once per document
class SpanInfo:
    name: str
    kind: str
    status: str
    duration_us: int
    parent_id: str
    service: str
    start_ns: int
    end_ns: int

    @classmethod
    def of(cls, doc: SpanDoc) -> SpanInfo:
        span = doc.source["span"]
        return cls(
            span["name"],
            span["kind"],
            span["status"],
            span["duration"]["us"],
            doc.parent_id,
            doc.service,
            doc.timestamp_ns,
            doc.timestamp_ns + doc.duration_ns,
        )


# Elasticsearch's external versions are signed 64-bit: 2**31 logs per summary, 2**31 spans.
SPAN_VERSION_SHIFT = 31


@dataclass(slots=True)  # held for every pending and recent trace: no per-instance dict
class TraceSummary:
    """What is known about one trace; `document()` is its summary in tether-traces."""

    trace_id: str
    start_ns: int = 0
    end_ns: int = 0
    spans: dict[str, SpanInfo] = field(default_factory=dict)
    roots: list[tuple[int, str]] = field(default_factory=list)  # (start, span id) of spans without parent
    error_count: int = 0
    logs_by_level: Counter[str] = field(default_factory=Counter)
    # Lists, not sets: a trace has a few services, and 10,000 recent traces held two empty sets
    # of 216 B each; a list of one service takes 64 B.
    services: list[str] = field(default_factory=list)
    log_services: list[str] = field(default_factory=list)  # services that logged with this trace id
    first_log_ns: int = 0  # the earliest log timestamp: the trace's time while no span is known
    index_ns: int = 0  # fixed at first emission, so later versions land in the same daily index
    sampling_policy: str = ""  # the tail sampling policy that kept the trace ("": sampling is off)

    def add_span(self, doc: SpanDoc) -> bool:
        """Learn a span; False for a replay of one already known."""
        if doc.span_id in self.spans:
            return False
        info = SpanInfo.of(doc)
        self.spans[doc.span_id] = info
        self.start_ns = min(self.start_ns or info.start_ns, info.start_ns)
        self.end_ns = max(self.end_ns, info.end_ns)
        self.error_count += info.status == "ERROR"
        if info.service and info.service not in self.services:
            self.services.append(info.service)
        if not info.parent_id:
            self.roots.append((doc.timestamp_ns, doc.span_id))
        return True

    def add_log(self, doc: LogDoc) -> None:
        self.logs_by_level[doc.level or "unknown"] += 1
        if doc.timestamp_ns and (not self.first_log_ns or doc.timestamp_ns < self.first_log_ns):
            self.first_log_ns = doc.timestamp_ns
        service = doc.source.get("service")
        if service and service["name"] not in self.log_services:
            self.log_services.append(service["name"])

    @property
    def version(self) -> int:
        """Grows with every span and log the summary learns (a replayed span is not counted twice):
        the newer of two versions of one collector, and the fuller of two rebuilt ones. Spans count
        first: a summary rebuilt from late lines alone (its trace gone from the recent-trace
        cache) has more logs but no span, and must never replace one that knew the trace's spans
        and root (seen with 60,000 traces replayed through a 10,000-trace cache)."""
        return (len(self.spans) << SPAN_VERSION_SHIFT) + self.logs_by_level.total()

    @property
    def timestamp_ns(self) -> int:
        """The trace's start; until a span is known, its earliest log (0 when neither has a time)."""
        return self.start_ns or self.first_log_ns

    def root_id(self) -> str:
        """The earliest span without a parent; until one is seen, the first span stands in."""
        if self.roots:
            return min(self.roots)[1]
        return next(iter(self.spans), "")

    def root(self) -> SpanInfo | None:
        root_id = self.root_id()
        return self.spans[root_id] if root_id else None

    def orphans(self) -> list[str]:
        """Spans whose parent never arrived (broken or partial propagation, or a lost span)."""
        return [
            span_id
            for span_id, info in self.spans.items()
            if info.parent_id and info.parent_id not in self.spans
        ]

    def document(self) -> dict[str, Any]:
        root = self.root()
        orphans = self.orphans()
        trace: dict[str, Any] = {
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
            "orphan_span_count": len(orphans),
        }
        worst = worst_level(self.logs_by_level)
        if worst:
            trace["worst_log_level"] = worst
        if orphans:
            trace["orphan_spans"] = sorted(orphans)[:MAX_LISTED_ORPHANS]
        without_spans = [service for service in self.log_services if service not in self.services]
        if self.spans and without_spans:
            # logged with this trace id but sent no span: context propagated, tracing not set up
            trace["services_without_spans"] = sorted(without_spans)
        document: dict[str, Any] = {"@timestamp": iso_timestamp(self.timestamp_ns), "trace": trace}
        if self.sampling_policy:
            document["tether"] = {"sampling": {"policy": self.sampling_policy}}
        if root is not None and not root.service:
            del trace["root"]["service"]
        if root is not None and root.service:
            document["service"] = {"name": root.service}
        return document
