"""The native span documents (tether_fastlog.span_documents) against the Python reference.

collector.documents.span_documents is the specification: for each request, the native documents,
moved by the same timestamp window, correlated with the same logs by the same TraceBuffer (which
extends `span` with their counts) and encoded by the sink into the bulk body, must parse to
exactly the reference's documents (types included), with no key twice at any level. Requests the
native path leaves to the reference must return None, never a different document.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from google.protobuf.message import DecodeError
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.unit.test_collector_native_documents import canonical
from tether.collector.correlate import Budget, Output, Stats, TraceBuffer
from tether.collector.decode import decode_spans
from tether.collector.documents import LogDoc, SpanDoc, native_span_documents, span_documents
from tether.collector.sinks.bulk import bulk_bodies
from tether.collector.timestamps import TimestampWindow

T0 = 1_704_164_645_123_456_789
TRACE = bytes(range(1, 17))


def s(value: str) -> AnyValue:
    return AnyValue(string_value=value)


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def request(
    *spans: Span, resource: list[KeyValue] | None = None, scope: str = "app"
) -> ExportTraceServiceRequest:
    attributes = [kv("service.name", s("checkout"))] if resource is None else resource
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=attributes),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope, version="1.2"), spans=spans)],
            )
        ]
    )


def span(span_id: int = 1, **fields: Any) -> Span:
    fields.setdefault("trace_id", TRACE)
    fields.setdefault("start_time_unix_nano", T0)
    fields.setdefault("end_time_unix_nano", T0 + 1_500_000)
    fields.setdefault("name", "GET /cart")
    return Span(span_id=span_id.to_bytes(8, "big"), **fields)


def log_of(doc: SpanDoc, i: int, level: str) -> LogDoc:
    """A line of the span's trace naming the span, so that correlation counts it on the span."""
    source = {"tether": {"record_id": f"r{i}"}, "span": {"id": doc.span_id}}
    return LogDoc(f"r{i}", doc.timestamp_ns, doc.trace_id, doc.span_id, source, level)


def indexed(docs: list[SpanDoc], arrival_ns: int) -> list[tuple[Any, ...]]:
    """What Elasticsearch receives for these spans: moved by the timestamp window, joined with a
    log line each (two on the first), then encoded by the sink's bulk bodies."""
    TimestampWindow.of(1.0, 1.0).bound(docs, arrival_ns)
    buffer = TraceBuffer(60.0, Budget(10**6, 10**12), 1000, Stats(), partition=0)
    outputs: list[Output] = []
    for doc in docs:
        outputs += buffer.add_span(doc, 0, 10, 0.0)
    for i, doc in enumerate(docs + docs[:1]):
        outputs += buffer.add_log(log_of(doc, i, "error" if i % 2 else "info"), 0, 10, 0.0)
    outputs += buffer.due(0.0, everything=True)
    out: list[tuple[Any, ...]] = []
    for part, body in bulk_bodies(outputs, 10**6, 10**12):
        lines = body.split(b"\n")[:-1]
        for sent, source in zip(part, lines[1::2], strict=True):
            out.append((sent.alias, sent.doc_id, sent.timestamp_ns, canonical(source)))
    return out


def compare(value: ExportTraceServiceRequest | bytes, arrival_ns: int = T0) -> list[SpanDoc]:
    """The native documents of `value`, after checking that they are the reference's."""
    raw = value if isinstance(value, bytes) else value.SerializeToString()
    native = native_span_documents(raw)
    assert native is not None, "left to the reference"
    reference = span_documents(ExportTraceServiceRequest.FromString(raw))
    fields = ("doc_id", "timestamp_ns", "trace_id", "span_id", "duration_ns", "parent_id", "service")
    assert [[getattr(d, f) for f in fields] for d in native] == [
        [getattr(d, f) for f in fields] for d in reference
    ]
    for doc in native:
        # what correlation extends is in `source`, never also in `head`
        assert doc.head is not None and doc.head.endswith(b",")
        assert set(doc.source) == {"span"}
        assert not {"span", "tether"} & set(orjson.loads(doc.head[:-1] + b"}"))
    assert indexed(native, arrival_ns) == indexed(reference, arrival_ns)
    return native


def test_a_span_with_every_field() -> None:
    full = span(
        7,
        parent_span_id=(3).to_bytes(8, "big"),
        kind=Span.SpanKind.SPAN_KIND_SERVER,
        attributes=[kv("http.route", s("/cart")), kv("http.status_code", AnyValue(int_value=503))],
        events=[Span.Event(time_unix_nano=T0 + 5, name="retry", attributes=[kv("n", AnyValue(int_value=2))])],
        status=Status(code=Status.STATUS_CODE_ERROR, message='upstream "cart" said no\n'),
        trace_state="a=b",
        links=[Span.Link(trace_id=TRACE, span_id=b"\x09" * 8)],
    )
    [doc] = compare(request(full))
    assert doc.parent_id == "0000000000000003" and doc.duration_ns == 1_500_000 and doc.service == "checkout"


@pytest.mark.parametrize("code", [0, 1, 2, 7])
@pytest.mark.parametrize("kind", [0, 3, 5, 9])
def test_kinds_and_status_codes_known_or_not(kind: int, code: int) -> None:
    compare(request(span(kind=kind, status=Status(code=code))))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "resource",
    [
        [],
        [kv("service.name", s(""))],
        [
            kv("service.name", s("a")),
            kv("k8s.pod.name", s("web-0")),
            kv("k8s.container.restart_count", AnyValue(int_value=2)),
        ],
        [
            kv("service.name", s("a")),
            kv("x", AnyValue()),
            kv("service.name", s("b")),
            kv("ok", AnyValue(bool_value=True)),
        ],
    ],
)
def test_resources(resource: list[KeyValue]) -> None:
    compare(request(span(), resource=resource))


def test_scope_names_and_versions_and_none() -> None:
    value = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(spans=[span(1)]),
                    ScopeSpans(scope=InstrumentationScope(name="only-name"), spans=[span(2)]),
                    ScopeSpans(scope=InstrumentationScope(version="only-version"), spans=[span(3)]),
                ]
            )
        ]
    )
    compare(value)


def test_end_before_start_empty_ids_and_timestamps_out_of_the_window() -> None:
    compare(
        request(span(end_time_unix_nano=T0 - 10), span(2, trace_id=b"")), arrival_ns=T0 + 3 * 86_400 * 10**9
    )


def test_spans_the_sdk_exports() -> None:
    """Spans as the OpenTelemetry SDK encodes them for its OTLP exporters."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "shop", "k8s.pod.name": "shop-1"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.tracer", "3.1")
    root = tracer.start_as_current_span(
        "checkout", kind=SpanKind.SERVER, attributes={"user": "u1", "items": 3}
    )
    with root, tracer.start_as_current_span("charge", attributes={"retry": True}) as child:
        child.add_event("declined", {"code": "51"})
        child.set_status(StatusCode.ERROR, "card declined")
    docs = compare(encode_spans(exporter.get_finished_spans()))
    assert sorted(d.source["span"]["name"] for d in docs) == ["charge", "checkout"]


@pytest.mark.parametrize(
    "value",
    [
        request(span(attributes=[kv("ratio", AnyValue(double_value=0.5))])),
        request(span(attributes=[kv("tags", AnyValue(array_value=ArrayValue(values=[s("a")])))])),
        request(span(attributes=[kv("raw", AnyValue(bytes_value=b"\x00"))])),
        request(span(), resource=[kv("service.name", AnyValue(int_value=1))]),
        request(span(events=[Span.Event(name="e", attributes=[kv("d", AnyValue(double_value=1.0))])])),
    ],
    ids=["double", "array", "bytes", "service-not-a-string", "event-double"],
)
def test_values_left_to_the_reference(value: ExportTraceServiceRequest) -> None:
    assert native_span_documents(value.SerializeToString()) is None


def test_merged_and_unknown_fields_are_left_to_the_reference() -> None:
    status = b"\x7a" + _ld(
        Status(code=Status.STATUS_CODE_OK).SerializeToString()
    )  # field 15, length-delimited
    two_statuses = span().SerializeToString() + status + status  # python protobuf merges them
    merged = b"\x0a" + _ld(
        b"\x12" + _ld(b"\x12" + _ld(two_statuses))
    )  # request.resource_spans.scope_spans.spans
    assert len(span_documents(ExportTraceServiceRequest.FromString(merged))) == 1
    assert native_span_documents(merged) is None
    value = request(span()).SerializeToString()
    assert native_span_documents(value) is not None
    assert native_span_documents(value + b"\x10\x01") is None  # an unknown field of the request


def _ld(payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([len(payload)]) + payload


def test_undecodable_bytes_are_the_references_error() -> None:
    broken = request(span()).SerializeToString()[:-3]
    assert native_span_documents(broken) is None
    with pytest.raises(DecodeError):
        decode_spans(broken, for_jaeger=False)


def test_the_request_is_decoded_for_jaeger_only() -> None:
    value = request(span()).SerializeToString()
    assert decode_spans(value, for_jaeger=False)[0] is None
    exported, docs = decode_spans(value, for_jaeger=True)
    assert exported is not None and len(exported.resource_spans[0].scope_spans[0].spans) == len(docs) == 1


def random_value(rng: random.Random) -> AnyValue:
    choice = rng.randrange(5)
    if choice == 0:
        return s(rng.choice(["", "plain", 'q"uote\\', "ünïcode ✓", "\x00\x1f", "a" * 300]))
    if choice == 1:
        return AnyValue(int_value=rng.choice([0, -1, 2**63 - 1, -(2**63), 42]))
    if choice == 2:
        return AnyValue(bool_value=rng.random() < 0.5)
    if choice == 3:
        return AnyValue()
    return s(str(rng.random()))


def random_attributes(rng: random.Random, n: int) -> list[KeyValue]:
    return [kv(rng.choice(["a", "b", "k.x", "é", ""]), random_value(rng)) for _ in range(n)]


def test_generated_requests() -> None:
    rng = random.Random(15)
    for _ in range(300):
        resources = []
        for _ in range(rng.randrange(1, 3)):
            spans = []
            for _ in range(rng.randrange(0, 6)):
                start = T0 + rng.randrange(-(10**12), 10**12)
                spans.append(
                    Span(
                        trace_id=rng.choice([TRACE, bytes(16), b"", rng.randbytes(16)]),
                        span_id=rng.randbytes(rng.choice([8, 8, 0, 3])),
                        parent_span_id=rng.choice([b"", rng.randbytes(8)]),
                        name=rng.choice(["", "GET /", "span ✓", 'x"y']),
                        kind=rng.randrange(7),  # type: ignore[arg-type]
                        start_time_unix_nano=start,
                        end_time_unix_nano=start + rng.randrange(-1000, 10**10),
                        attributes=random_attributes(rng, rng.randrange(4)),
                        events=[
                            Span.Event(
                                time_unix_nano=start + j,
                                name=rng.choice(["", "ev"]),
                                attributes=random_attributes(rng, rng.randrange(3)),
                            )
                            for j in range(rng.randrange(3))
                        ],
                        status=Status(code=rng.randrange(4), message=rng.choice(["", "bad ✗"])),  # type: ignore[arg-type]
                    )
                )
            resources.append(
                ResourceSpans(
                    resource=Resource(
                        attributes=[*random_attributes(rng, rng.randrange(3)), kv("service.name", s("svc"))]
                    ),
                    scope_spans=[
                        ScopeSpans(scope=InstrumentationScope(name=rng.choice(["", "lib"])), spans=spans)
                    ],
                )
            )
        value = ExportTraceServiceRequest(resource_spans=resources)
        compare(value, arrival_ns=T0 + rng.choice([0, 2 * 86_400 * 10**9]))
