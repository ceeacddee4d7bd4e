"""Joining one log document to what its trace knows: its own span, an inferred one, or the trace.

`tether.correlation` says how (schemas/README.md, "Correlation"): `span` (the line named its span
and the span arrived), `inferred` (the line named no span; `tether.inference` gives the rule,
collector/span_inference.py), `trace` (the trace's spans arrived, the line's did not), `none`
(nothing is known of its trace yet). A joined or inferred line carries its span's name, kind,
status, duration and parent, and, when it names no service, its span's service.

The result is recomputed when a late span arrives (the line is then written again), so `apply`
sets every field it owns from scratch rather than adding to what an earlier result wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.collector.documents import LogDoc
from tether.collector.span_inference import SpanIndex
from tether.collector.trace_summary import SpanInfo, TraceSummary

SPAN, INFERRED, TRACE, NONE = "span", "inferred", "trace", "none"


@dataclass(frozen=True, slots=True)
class Joined:
    """How a log line is joined: its correlation, the span it is joined to ("" if none), the rule."""

    correlation: str
    span_id: str = ""
    rule: str = ""


NOTHING_KNOWN = Joined(NONE)
TRACE_ONLY = Joined(TRACE)


def own_service(doc: LogDoc) -> str:
    """The service the line names itself ("" when it names none)."""
    service = doc.source.get("service")
    return service["name"] if service else ""


def join(doc: LogDoc, summary: TraceSummary, index: SpanIndex, service: str) -> Joined:
    """How `doc` (of `service`, its own) joins what `summary` knows now."""
    if not summary.spans:
        return NOTHING_KNOWN
    if doc.span_id:
        return Joined(SPAN, doc.span_id) if doc.span_id in summary.spans else TRACE_ONLY
    inference = index.infer(service, doc.timestamp_ns)
    return Joined(INFERRED, inference.span_id, inference.rule) if inference else TRACE_ONLY


def apply(doc: LogDoc, joined: Joined, summary: TraceSummary, service: str) -> None:
    """Write `joined` into the document's fields (`service`: the line's own, "" if none)."""
    info = summary.spans.get(joined.span_id) if joined.span_id else None
    if info is not None:
        apply_span(doc, joined.span_id, info, service, joined.correlation, joined.rule)
        return
    source = doc.source
    tether = source["tether"]
    tether["correlation"] = joined.correlation
    tether.pop("inference", None)
    if doc.span_id:
        source["span"] = {"id": doc.span_id}
    else:
        source.pop("span", None)
    source.pop("parent", None)
    if not service:
        root = summary.root()
        if root is not None and root.service:
            source["service"] = {"name": root.service}
        else:
            source.pop("service", None)


def apply_span(
    doc: LogDoc, span_id: str, info: SpanInfo, service: str, correlation: str, rule: str = ""
) -> None:
    """Join the document to span `span_id` (`info`): the fast path of a line naming its span."""
    source = doc.source
    tether = source["tether"]
    tether["correlation"] = correlation
    if rule:
        tether["inference"] = rule
    else:
        tether.pop("inference", None)
    source["span"] = {
        "id": span_id,
        "name": info.name,
        "kind": info.kind,
        "status": info.status,
        "duration": {"us": info.duration_us},
    }
    if info.parent_id:
        source["parent"] = {"id": info.parent_id}
    else:
        source.pop("parent", None)
    if not service:
        if info.service:
            source["service"] = {"name": info.service}
        else:
            source.pop("service", None)
