"""Which span a log line that names its trace but no span belongs to (the rules in schemas/README.md,
"Span inference").

In order, the first that finds a span:
1. `containing`: the innermost span of the line's service whose time window holds the line's
   timestamp, widened by `skew` on both sides (a line stamped in milliseconds at the very start of
   a span, or a little clock skew between a logger and its tracer);
2. `service_entry`: that service's entry span in the trace (a span of the service whose parent is
   in another service, or missing), the one nearest in time if it was entered more than once;
3. `root`: the trace's root span.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.collector.trace_summary import SpanInfo, TraceSummary

CONTAINING, SERVICE_ENTRY, ROOT = "containing", "service_entry", "root"


@dataclass(frozen=True, slots=True)
class Inference:
    span_id: str
    rule: str


class SpanIndex:
    """A trace's spans by service, built once per emission for all of its lines that need it."""

    def __init__(self, summary: TraceSummary, skew_ns: int) -> None:
        self.summary = summary
        self.skew_ns = skew_ns
        self._by_service: dict[str, list[tuple[str, SpanInfo]]] | None = None  # built when first asked

    @property
    def by_service(self) -> dict[str, list[tuple[str, SpanInfo]]]:
        if self._by_service is None:
            self._by_service = {}
            for span_id, info in self.summary.spans.items():
                self._by_service.setdefault(info.service, []).append((span_id, info))
        return self._by_service

    def infer(self, service: str, timestamp_ns: int) -> Inference | None:
        """The span of a line of `service` stamped `timestamp_ns`; None when the trace has no span."""
        spans = self.by_service.get(service, []) if service else []
        if spans and timestamp_ns:
            skew, best, best_key = self.skew_ns, "", (0, 0, "")
            for span_id, info in spans:
                if info.start_ns - skew <= timestamp_ns <= info.end_ns + skew:
                    # innermost: started last, then ended first (the span id breaks ties, for replays)
                    key = (info.start_ns, -info.end_ns, span_id)
                    if not best or key > best_key:
                        best, best_key = span_id, key
            if best:
                return Inference(best, CONTAINING)
        entry = self._entry(spans, timestamp_ns)
        if entry:
            return Inference(entry, SERVICE_ENTRY)
        root = self.summary.root_id()
        return Inference(root, ROOT) if root else None

    def _entry(self, spans: list[tuple[str, SpanInfo]], timestamp_ns: int) -> str:
        known = self.summary.spans
        entries = [
            (_distance(info, timestamp_ns), info.start_ns, span_id)
            for span_id, info in spans
            if not info.parent_id
            or info.parent_id not in known
            or known[info.parent_id].service != info.service
        ]
        return min(entries)[2] if entries else ""


def _distance(info: SpanInfo, timestamp_ns: int) -> int:
    if not timestamp_ns:
        return 0
    return max(info.start_ns - timestamp_ns, timestamp_ns - info.end_ns, 0)
