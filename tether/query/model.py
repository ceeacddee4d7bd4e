"""A trace as the terminal shows it: its summary, a tree of spans, each span's logs, and the logs
that belong to no span of the trace. Plain data built from Elasticsearch hits; no I/O here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def parse_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time; Python's datetime stops at microseconds,
    and tether's documents carry nanoseconds."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, offset = text, ""
    for sign in ("+", "-"):
        position = text.rfind(sign)
        if position > 10:  # past the date's own dashes
            head, offset = text[:position], text[position:]
            break
    fraction_ns = 0
    if "." in head:
        head, digits = head.split(".", 1)
        fraction_ns = int((digits + "000000000")[:9])
    moment = datetime.fromisoformat(head + (offset or "+00:00"))
    return int(moment.timestamp()) * 1_000_000_000 + fraction_ns


def iso(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def _get(source: dict[str, Any], dotted: str, default: Any = "") -> Any:
    """A field by its dotted ECS name, written nested ({"log": {"level": ..}}) or flat ("log.level")."""
    if dotted in source:
        return source[dotted]
    node: Any = source
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _timestamp(hit: dict[str, Any], field_name: str = "@timestamp") -> int:
    """The sort value when the search sorted by the time (already nanoseconds), else the source's."""
    sort = hit.get("sort")
    if sort and isinstance(sort[0], int):
        return sort[0]
    value = _get(hit.get("_source", {}), field_name, None)
    return parse_ns(value) if isinstance(value, str) else 0


@dataclass(slots=True)
class LogLine:
    doc_id: str
    timestamp_ns: int
    level: str
    message: str
    service: str
    trace_id: str
    span_id: str
    correlation: str

    @classmethod
    def from_hit(cls, hit: dict[str, Any]) -> LogLine:
        source = hit.get("_source", {})
        return cls(
            doc_id=str(hit.get("_id", "")),
            timestamp_ns=_timestamp(hit),
            level=str(_get(source, "log.level") or ""),
            message=str(_get(source, "message") or ""),
            service=str(_get(source, "service.name") or ""),
            trace_id=str(_get(source, "trace.id") or ""),
            span_id=str(_get(source, "span.id") or ""),
            correlation=str(_get(source, "tether.correlation") or ""),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.doc_id,
            "@timestamp": iso(self.timestamp_ns),
            "level": self.level,
            "message": self.message,
            "service": self.service,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "correlation": self.correlation,
        }


@dataclass(slots=True)
class SpanNode:
    span_id: str
    parent_id: str
    name: str
    service: str
    kind: str
    status: str
    status_message: str
    start_ns: int
    duration_ns: int
    depth: int = 0
    parent_missing: bool = False  # has a parent id, but that span never arrived
    children: list[SpanNode] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns

    @property
    def error(self) -> bool:
        return self.status == "ERROR"

    @classmethod
    def from_hit(cls, hit: dict[str, Any]) -> SpanNode:
        source = hit.get("_source", {})
        # event.duration is in nanoseconds; span.duration.us is what the index is searched by.
        duration_ns = _get(source, "event.duration", None)
        if not isinstance(duration_ns, int):
            duration_ns = int(_get(source, "span.duration.us", 0) or 0) * 1000
        return cls(
            span_id=str(_get(source, "span.id")),
            parent_id=str(_get(source, "parent.id") or ""),
            name=str(_get(source, "span.name")),
            service=str(_get(source, "service.name")),
            kind=str(_get(source, "span.kind")),
            status=str(_get(source, "span.status") or "UNSET"),
            status_message=str(_get(source, "span.status_message") or ""),
            start_ns=_timestamp(hit),
            duration_ns=max(duration_ns, 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "depth": self.depth,
            "name": self.name,
            "service": self.service,
            "kind": self.kind,
            "status": self.status,
            "status_message": self.status_message,
            "start": iso(self.start_ns),
            "duration_us": self.duration_ns // 1000,
            "parent_missing": self.parent_missing,
            "logs": [log.to_json() for log in self.logs],
        }


@dataclass(slots=True)
class Summary:
    """The trace's document in tether-traces, as the collector wrote it."""

    trace_id: str
    root_service: str
    root_operation: str
    start_ns: int
    end_ns: int
    duration_us: int
    span_count: int
    error_count: int
    log_count: int
    logs_by_level: dict[str, int]
    services: list[str]
    status: str
    complete: bool

    @classmethod
    def from_hit(cls, hit: dict[str, Any]) -> Summary:
        source = hit.get("_source", {})
        start, end = _get(source, "trace.start", None), _get(source, "trace.end", None)
        by_level = _get(source, "trace.logs_by_level", {})
        services = _get(source, "trace.services", [])
        return cls(
            trace_id=str(_get(source, "trace.id")),
            root_service=str(_get(source, "trace.root.service")),
            root_operation=str(_get(source, "trace.root.operation")),
            start_ns=parse_ns(start) if isinstance(start, str) else 0,
            end_ns=parse_ns(end) if isinstance(end, str) else 0,
            duration_us=int(_get(source, "trace.duration.us", 0) or 0),
            span_count=int(_get(source, "trace.span_count", 0) or 0),
            error_count=int(_get(source, "trace.error_count", 0) or 0),
            log_count=int(_get(source, "trace.log_count", 0) or 0),
            logs_by_level={str(k): int(v) for k, v in by_level.items()} if isinstance(by_level, dict) else {},
            services=[str(s) for s in services] if isinstance(services, list) else [str(services)],
            status=str(_get(source, "trace.status")),
            complete=bool(_get(source, "trace.complete", False)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "root": {"service": self.root_service, "operation": self.root_operation},
            "start": iso(self.start_ns) if self.start_ns else None,
            "end": iso(self.end_ns) if self.end_ns else None,
            "duration_us": self.duration_us,
            "span_count": self.span_count,
            "error_count": self.error_count,
            "log_count": self.log_count,
            "logs_by_level": self.logs_by_level,
            "services": self.services,
            "status": self.status,
            "complete": self.complete,
        }


@dataclass(slots=True)
class TraceView:
    trace_id: str
    summary: Summary | None
    roots: list[SpanNode]
    orphan_logs: list[LogLine]  # no span id, or a span that is not in the trace
    notes: list[str] = field(default_factory=list)  # e.g. what was cut off

    @property
    def empty(self) -> bool:
        return self.summary is None and not self.roots and not self.orphan_logs

    def walk(self) -> Iterator[SpanNode]:
        """Every span once, parents before children, siblings by start time."""
        stack = list(reversed(self.roots))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def bounds(self) -> tuple[int, int]:
        """(start, end) in nanoseconds over every span and log shown."""
        times: list[int] = []
        for node in self.walk():
            times += [node.start_ns, node.end_ns]
            times += [log.timestamp_ns for log in node.logs]
        times += [log.timestamp_ns for log in self.orphan_logs]
        if not times and self.summary is not None:
            times = [self.summary.start_ns, self.summary.end_ns]
        return (min(times), max(times)) if times else (0, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "summary": self.summary.to_json() if self.summary else None,
            "spans": [node.to_json() for node in self.walk()],
            "orphan_logs": [log.to_json() for log in self.orphan_logs],
            "notes": self.notes,
        }


def build_trace(
    trace_id: str,
    summary: Summary | None,
    spans: list[SpanNode],
    logs: list[LogLine],
    notes: list[str] | None = None,
) -> TraceView:
    """Link spans to their parents and logs to their spans. Spans whose parent is missing become
    roots (flagged); a replayed span id keeps its first copy."""
    by_id: dict[str, SpanNode] = {}
    for span in spans:
        by_id.setdefault(span.span_id, span)
    roots: list[SpanNode] = []
    for span in by_id.values():
        parent = by_id.get(span.parent_id) if span.parent_id else None
        if parent is None or parent is span:
            span.parent_missing = bool(span.parent_id) and parent is None
            roots.append(span)
        else:
            parent.children.append(span)
    orphans: list[LogLine] = []
    for log in logs:
        owner = by_id.get(log.span_id) if log.span_id else None
        (owner.logs if owner else orphans).append(log)
    roots.sort(key=lambda s: (s.start_ns, s.span_id))
    view = TraceView(trace_id, summary, roots, sorted(orphans, key=lambda log: log.timestamp_ns), notes or [])
    seen: set[str] = set()
    _set_depths(roots, seen)
    # A parent cycle (corrupt data) is unreachable from any root: cut it and show it as a root.
    for span in by_id.values():
        if span.span_id not in seen:
            parent = by_id[span.parent_id]
            parent.children.remove(span)
            span.parent_missing = True
            view.roots.append(span)
            _set_depths([span], seen)
    return view


def _set_depths(roots: list[SpanNode], seen: set[str]) -> None:
    """Sort children and logs by time and set each node's depth, parents first."""
    stack = [(root, 0) for root in reversed(roots)]
    while stack:
        node, depth = stack.pop()
        if node.span_id in seen:
            continue
        seen.add(node.span_id)
        node.depth = depth
        node.children.sort(key=lambda s: (s.start_ns, s.span_id))
        node.logs.sort(key=lambda log: log.timestamp_ns)
        stack.extend((child, depth + 1) for child in reversed(node.children))
