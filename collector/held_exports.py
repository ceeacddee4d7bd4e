"""Spans records held for Jaeger until every trace in them is decided, so each span goes out with its
trace's logs as span events and without the spans tail sampling dropped.

A record's request is exported as it came (resources, scopes, spans), with two changes made in
place: the log lines correlated to a span become its events (`log` events with the line's level,
message and how it was joined; at most `max_events` per span, the rest counted in the span's
`dropped_events_count`), and the spans of dropped traces are left out. A record's spans belong to
the traces of one SDK batch, emitted within a window of each other, so a record waits at most about
one correlation window longer than its first trace.

Logs that arrive after their span went out are not sent again: that would send the span twice
(schemas/README.md, "Logs inside the trace view").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from typing_extensions import TypeVar

from tether.collector.documents import LogDoc

Ack = TypeVar("Ack", default=object)

LOG_EVENT = "log"


class HeldExport(Generic[Ack]):
    """One spans record's export request and its acknowledgement (the record's Jaeger part)."""

    __slots__ = ("ack", "dropped", "request", "waiting")

    def __init__(self, request: ExportTraceServiceRequest, ack: Ack, spans: int) -> None:
        self.request = request
        self.ack = ack
        self.waiting = spans  # spans whose trace is not decided yet
        self.dropped: set[int] = set()  # positions (in request order) of spans sampling dropped

    def outgoing(self) -> ExportTraceServiceRequest | None:
        """What Jaeger receives once every span is decided: None when sampling dropped them all."""
        if not self.dropped:
            return self.request
        out = ExportTraceServiceRequest()
        position = 0
        for resource_spans in self.request.resource_spans:
            kept_resource = None
            for scope_spans in resource_spans.scope_spans:
                kept = []
                for span in scope_spans.spans:
                    if position not in self.dropped:
                        kept.append(span)
                    position += 1
                if not kept:
                    continue
                if kept_resource is None:
                    kept_resource = out.resource_spans.add(
                        resource=resource_spans.resource, schema_url=resource_spans.schema_url
                    )
                kept_resource.scope_spans.add(
                    scope=scope_spans.scope, schema_url=scope_spans.schema_url, spans=kept
                )
        return out if out.resource_spans else None


@dataclass(slots=True)
class SpanExport(Generic[Ack]):
    """One span's place in its record's HeldExport."""

    held: HeldExport[Ack]
    position: int
    span: Span

    def decided(self, keep: bool) -> bool:
        """Record the decision for this span; True once the whole record is decided."""
        held = self.held
        if not keep:
            held.dropped.add(self.position)
        held.waiting -= 1
        return held.waiting == 0


def span_exports(request: ExportTraceServiceRequest, ack: Ack) -> list[SpanExport[Ack]]:
    """The SpanExport of each span of `request`, in the order span_documents() lists them."""
    held = HeldExport(request, ack, 0)
    exports = [
        SpanExport(held, position, span)
        for position, span in enumerate(
            span
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        )
    ]
    held.waiting = len(exports)
    return exports


def add_log_events(span: Span, logs: Sequence[LogDoc], max_events: int) -> int:
    """Add `logs` (in time order) to `span` as `log` events, at most `max_events` of ours in all;
    return how many did not fit (also added to the span's dropped_events_count)."""
    room = max(max_events - sum(event.name == LOG_EVENT for event in span.events), 0)
    ordered = sorted(logs, key=lambda doc: doc.timestamp_ns)
    for doc in ordered[:room]:
        span.events.add(time_unix_nano=doc.timestamp_ns, name=LOG_EVENT, attributes=_event_attributes(doc))
    dropped = max(len(ordered) - room, 0)
    span.dropped_events_count += dropped
    return dropped


def _event_attributes(doc: LogDoc) -> list[KeyValue]:
    tether = doc.source["tether"]
    pairs = [
        ("message", _message(doc)),
        ("log.level", doc.level),
        ("tether.correlation", tether["correlation"]),
    ]
    if "inference" in tether:
        pairs.append(("tether.inference", tether["inference"]))
    if "record_id" in tether:
        pairs.append(("log.record.uid", tether["record_id"]))
    return [KeyValue(key=key, value=AnyValue(string_value=value)) for key, value in pairs if value]


def _message(doc: LogDoc) -> str:
    message = doc.source.get("message")
    if message is None and doc.head is not None:
        # Native documents keep the message in their JSON-encoded head (`{...,`): read it back.
        message = orjson.loads(doc.head[:-1] + b"}").get("message")
    return message if isinstance(message, str) else ""
