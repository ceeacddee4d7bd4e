"""collector.correlate: holding logs for their spans and enriching them."""

from __future__ import annotations

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from collector.correlate import Correlator
from collector.documents import LogDoc, SpanDoc, log_documents, span_documents
from schemas.log_fields import default_mapping
from schemas.records import ATTR_AGENT_ID, ATTR_RECORD_ID, FILE_SCOPE

T0 = 1_704_164_645_000_000_000
TRACE_A = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
TRACE_B = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
ROOT = bytes.fromhex("00f067aa0ba902b7")
CHILD = bytes.fromhex("b7ad6b7169203331")
OTHER = bytes.fromhex("1111111111111111")
WAIT = 5.0
NOW = 1000.0


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def spans(
    trace_id: bytes,
    span_id: bytes,
    *,
    parent: bytes = b"",
    service: str = "frontend",
    name: str = "GET /checkout",
    kind: int = Span.SPAN_KIND_SERVER,
    status: int = Status.STATUS_CODE_OK,
    duration_ns: int = 1_500_000,
) -> list[SpanDoc]:
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + duration_ns,
        status=Status(code=status),  # type: ignore[arg-type]
    )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", service)]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="lib"), spans=[span])],
            )
        ]
    )
    return span_documents(request)


def log(trace_id: bytes = b"", span_id: bytes = b"", *, service: str = "", rid: str = "agent:fp:0") -> LogDoc:
    body = orjson.dumps({"message": "hello", "level": "info"}).decode()
    record = LogRecord(
        time_unix_nano=T0,
        severity_text="info",
        severity_number=9,
        body=AnyValue(string_value=body),
        trace_id=trace_id,
        span_id=span_id,
        attributes=[kv(ATTR_RECORD_ID, rid)],
    )
    resource = [kv(ATTR_AGENT_ID, "agent")] + ([kv("service.name", service)] if service else [])
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=resource),
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=FILE_SCOPE), log_records=[record])],
            )
        ]
    )
    [doc] = log_documents(request, default_mapping())
    return doc


def correlator(max_cached_spans: int = 100, max_pending_logs: int = 100) -> Correlator:
    return Correlator(wait_seconds=WAIT, max_cached_spans=max_cached_spans, max_pending_logs=max_pending_logs)


def test_untraced_log_is_returned_at_once() -> None:
    c = correlator()
    doc = log()
    item = c.add_log(doc, offset=17, now=NOW)
    assert item is not None
    assert item.doc is doc
    assert item.offset == 17
    assert item.deadline == NOW + WAIT
    assert c.pending == 0
    source = c.enrich(doc)
    assert source["tether"]["correlation"] == "untraced"
    assert "span" not in source and "trace" not in source


def test_log_of_a_known_span_is_returned_at_once_and_enriched() -> None:
    c = correlator()
    c.add_spans(
        spans(TRACE_A, CHILD, parent=ROOT, name="charge", kind=Span.SPAN_KIND_CLIENT, duration_ns=2_345_678)
    )
    doc = log(TRACE_A, CHILD)
    item = c.add_log(doc, offset=3, now=NOW)
    assert item is not None and item.doc is doc
    assert c.pending == 0
    source = c.enrich(doc)
    assert source["span"] == {
        "id": CHILD.hex(),
        "name": "charge",
        "kind": "client",
        "status": "OK",
        "duration": {"us": 2345},
    }
    assert source["parent"] == {"id": ROOT.hex()}
    assert source["trace"] == {"id": TRACE_A.hex()}
    assert source["tether"]["correlation"] == "span"
    assert source["service"]["name"] == "frontend"  # the log had none: taken from the span


def test_enrich_keeps_the_logs_own_service_name() -> None:
    c = correlator()
    c.add_spans(spans(TRACE_A, ROOT, service="frontend"))
    source = c.enrich(log(TRACE_A, ROOT, service="worker"))
    assert source["service"]["name"] == "worker"
    assert source["tether"]["correlation"] == "span"
    assert "parent" not in source  # a root span has no parent


def test_log_waits_for_its_span_and_is_released_when_it_arrives() -> None:
    c = correlator()
    doc = log(TRACE_A, CHILD)
    assert c.add_log(doc, offset=9, now=NOW) is None
    assert c.pending == 1
    assert c.release(NOW + 1) == []
    assert c.pending == 1
    c.add_spans(spans(TRACE_A, CHILD, status=Status.STATUS_CODE_ERROR))
    [item] = c.release(NOW + 1)
    assert (item.doc, item.offset, item.deadline) == (doc, 9, NOW + WAIT)
    assert c.pending == 0
    assert c.release(NOW + 1) == []
    source = c.enrich(item.doc)
    assert source["tether"]["correlation"] == "span"
    assert source["span"]["status"] == "ERROR"


def test_log_is_released_at_its_deadline() -> None:
    c = correlator()
    doc = log(TRACE_A, CHILD)
    assert c.add_log(doc, offset=1, now=NOW) is None
    assert c.release(NOW + WAIT - 0.001) == []
    [item] = c.release(NOW + WAIT)
    assert item.doc is doc
    assert c.pending == 0
    assert c.enrich(doc)["tether"]["correlation"] == "none"
    assert c.enrich(doc)["service"]["name"] == ""


def test_release_keeps_arrival_order_and_only_releases_what_is_ready() -> None:
    c = correlator()
    early = log(TRACE_A, CHILD, rid="r1")
    other = log(TRACE_B, OTHER, rid="r2")
    late = log(TRACE_A, ROOT, rid="r3")
    assert c.add_log(early, 1, NOW) is None
    assert c.add_log(other, 2, NOW + 1) is None
    assert c.add_log(late, 3, NOW + 2) is None
    # Span (A, CHILD) arrives: only r1 is ready, r2 and r3 keep waiting.
    c.add_spans(spans(TRACE_A, CHILD))
    assert [i.doc.doc_id for i in c.release(NOW + 2)] == ["r1"]
    # At NOW + 1 + WAIT r2's wait is over, not r3's.
    assert [i.doc.doc_id for i in c.release(NOW + 1 + WAIT)] == ["r2"]
    assert [i.doc.doc_id for i in c.release(NOW + 2 + WAIT)] == ["r3"]


def test_release_everything() -> None:
    c = correlator()
    for n in range(5):
        assert c.add_log(log(TRACE_A, CHILD, rid=f"r{n}"), n, NOW) is None
    assert [i.offset for i in c.release(NOW, everything=True)] == [0, 1, 2, 3, 4]
    assert c.pending == 0


def test_pending_logs_are_bounded() -> None:
    c = correlator(max_pending_logs=2)
    assert c.add_log(log(TRACE_A, CHILD, rid="r1"), 1, NOW) is None
    assert c.add_log(log(TRACE_A, CHILD, rid="r2"), 2, NOW) is None
    overflow = log(TRACE_A, CHILD, rid="r3")
    item = c.add_log(overflow, 3, NOW)
    assert item is not None and item.doc is overflow  # emitted now instead of waiting
    assert c.pending == 2
    assert c.enrich(overflow)["tether"]["correlation"] == "none"
    # Untraced and known-span logs are never held, even when the queue is full.
    assert c.add_log(log(rid="r4"), 4, NOW) is not None
    assert c.pending == 2


def test_trace_correlation_uses_the_root_span_service() -> None:
    c = correlator()
    c.add_spans(spans(TRACE_A, CHILD, parent=ROOT, service="payments"))
    c.add_spans(spans(TRACE_A, ROOT, service="frontend"))
    c.add_spans(spans(TRACE_A, OTHER, parent=ROOT, service="inventory"))
    doc = log(TRACE_A, bytes.fromhex("2222222222222222"))  # a span the collector never saw
    assert c.add_log(doc, 1, NOW) is None
    [item] = c.release(NOW + WAIT)
    source = c.enrich(item.doc)
    assert source["tether"]["correlation"] == "trace"
    assert source["service"]["name"] == "frontend"
    assert source["span"] == {"id": "2222222222222222"}  # no span details invented


def test_trace_correlation_without_root_uses_the_first_service_seen() -> None:
    c = correlator()
    c.add_spans(spans(TRACE_A, CHILD, parent=ROOT, service="payments"))
    c.add_spans(spans(TRACE_A, OTHER, parent=ROOT, service="inventory"))
    source = c.enrich(log(TRACE_A, bytes.fromhex("3333333333333333")))
    assert (source["tether"]["correlation"], source["service"]["name"]) == ("trace", "payments")


def test_trace_correlation_keeps_the_logs_own_service() -> None:
    c = correlator()
    c.add_spans(spans(TRACE_A, ROOT, service="frontend"))
    source = c.enrich(log(TRACE_A, OTHER, service="worker"))
    assert (source["tether"]["correlation"], source["service"]["name"]) == ("trace", "worker")


def test_log_with_trace_but_no_span_id() -> None:
    c = correlator()
    c.add_spans(spans(TRACE_A, ROOT))
    doc = log(TRACE_A, b"")
    assert c.add_log(doc, 1, NOW) is None  # waits: its trace may still be incomplete
    [item] = c.release(NOW + WAIT)
    source = c.enrich(item.doc)
    assert source["tether"]["correlation"] == "trace"
    assert "span" not in source


def test_span_cache_is_bounded_least_recent_first() -> None:
    c = correlator(max_cached_spans=2)
    c.add_spans(spans(TRACE_A, ROOT))
    c.add_spans(spans(TRACE_A, CHILD, parent=ROOT))
    c.add_spans(spans(TRACE_B, OTHER))
    assert c.add_log(log(TRACE_A, ROOT, rid="evicted"), 1, NOW) is None  # forgotten: it waits
    assert c.add_log(log(TRACE_A, CHILD, rid="kept"), 2, NOW) is not None
    assert c.add_log(log(TRACE_B, OTHER, rid="newest"), 3, NOW) is not None


def test_spans_of_one_request_batch() -> None:
    c = correlator()
    c.add_spans(spans(TRACE_A, ROOT) + spans(TRACE_B, OTHER, name="other"))
    assert c.enrich(log(TRACE_A, ROOT))["span"]["name"] == "GET /checkout"
    assert c.enrich(log(TRACE_B, OTHER))["span"]["name"] == "other"
