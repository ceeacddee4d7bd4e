"""Joining logs to spans by trace id, per partition: the partition owns its traces' logs and spans."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from collector.documents import LogDoc, SpanDoc


@dataclass(frozen=True, slots=True)
class SpanInfo:
    name: str
    kind: str
    status: str
    duration_us: int
    parent_id: str
    service: str


@dataclass(slots=True)
class PendingLog:
    doc: LogDoc
    offset: int
    deadline: float


class Correlator:
    """Remembers recent spans (bounded LRU) and holds logs until their span arrives or time is up."""

    def __init__(self, wait_seconds: float, max_cached_spans: int, max_pending_logs: int) -> None:
        self.wait_seconds = wait_seconds
        self.max_cached_spans = max_cached_spans
        self.max_pending_logs = max_pending_logs
        self._spans: OrderedDict[tuple[str, str], SpanInfo] = OrderedDict()
        self._trace_service: OrderedDict[str, str] = OrderedDict()
        self._pending: deque[PendingLog] = deque()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add_spans(self, docs: list[SpanDoc]) -> None:
        for doc in docs:
            span = doc.source["span"]
            self._spans[(doc.trace_id, doc.span_id)] = SpanInfo(
                name=span["name"],
                kind=span["kind"],
                status=span["status"],
                duration_us=span["duration"]["us"],
                parent_id=doc.source.get("parent", {}).get("id", ""),
                service=doc.source["service"]["name"],
            )
            self._spans.move_to_end((doc.trace_id, doc.span_id))
            if doc.trace_id not in self._trace_service or "parent" not in doc.source:
                self._trace_service[doc.trace_id] = doc.source["service"]["name"]
        while len(self._spans) > self.max_cached_spans:
            self._spans.popitem(last=False)
        while len(self._trace_service) > self.max_cached_spans:
            self._trace_service.popitem(last=False)

    def add_log(self, doc: LogDoc, offset: int, now: float) -> PendingLog | None:
        """Hold a traced log for its span; returns it at once when it need not (or cannot) wait."""
        item = PendingLog(doc, offset, now + self.wait_seconds)
        if not doc.trace_id or (doc.trace_id, doc.span_id) in self._spans:
            return item
        if len(self._pending) >= self.max_pending_logs:
            return item  # bounded: it is emitted now, marked as not correlated
        self._pending.append(item)
        return None

    def release(self, now: float, everything: bool = False) -> list[PendingLog]:
        """Logs whose span is now known, or whose wait is over (all of them when `everything`)."""
        ready, keep = [], deque[PendingLog]()
        for item in self._pending:
            if everything or now >= item.deadline or (item.doc.trace_id, item.doc.span_id) in self._spans:
                ready.append(item)
            else:
                keep.append(item)
        self._pending = keep
        return ready

    def enrich(self, doc: LogDoc) -> dict[str, Any]:
        source = doc.source
        if not doc.trace_id:
            source["tether"]["correlation"] = "untraced"
            return source
        info = self._spans.get((doc.trace_id, doc.span_id))
        if info is not None:
            source["span"].update(
                name=info.name, kind=info.kind, status=info.status, duration={"us": info.duration_us}
            )
            if info.parent_id:
                source["parent"] = {"id": info.parent_id}
            if not source["service"]["name"]:
                source["service"]["name"] = info.service
            source["tether"]["correlation"] = "span"
        elif doc.trace_id in self._trace_service:
            if not source["service"]["name"]:
                source["service"]["name"] = self._trace_service[doc.trace_id]
            source["tether"]["correlation"] = "trace"
        else:
            source["tether"]["correlation"] = "none"
        return source


def monotonic() -> float:
    return time.monotonic()
