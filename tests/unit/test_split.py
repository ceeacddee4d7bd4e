"""The native OTLP request splitter (tether_fastlog.split_traces / split_logs) against the
reference (decode + agent.encode.split_request), through agent.split.

Generated requests (several resources, scopes, schema_urls, attributes of every kind, events,
links, spans of many traces, zero / short / long trace ids, empty scopes and resources, logs
with and without trace ids) must split into the same messages, partition by partition, with the
same counts; every item must sit in the partition partition_for_trace names, and every item
written must be valid OTLP (trace_id empty or 16 bytes, span_id empty or 8: what the
OpenTelemetry Collector's decoder accepts), log records with malformed ids being kept without
them, flagged. Malformed bodies must be refused by both paths, and random mutations of valid
bodies accepted or refused alike.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import tether_fastlog
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    EntityRef,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tether.agent import split as agent_split
from tether.agent.split import (
    CountedSplit,
    reference_split_logs_bytes,
    reference_split_traces_bytes,
    split_logs_bytes,
    split_traces_bytes,
)
from tether.schemas.records import (
    ATTR_INVALID_SPAN_ID,
    ATTR_INVALID_TRACE_ID,
    is_valid_span_id,
    is_valid_trace_id,
    is_wellformed_span_id,
    partition_for_trace,
)

Splitter = Callable[[bytes], CountedSplit]
SPAN_ID = bytes.fromhex("00f067aa0ba902b7")

# ---------------------------------------------------------------------------------- builders


def _any(rng: random.Random, depth: int = 0) -> AnyValue:
    kind = rng.randrange(7 if depth < 2 else 5)
    if kind == 0:
        return AnyValue(string_value=rng.choice(["", "x", "héllo ✓", "a\x00b", "GET /api"]))
    if kind == 1:
        return AnyValue(bool_value=rng.random() < 0.5)
    if kind == 2:
        return AnyValue(int_value=rng.choice([0, -1, 200, 2**63 - 1, -(2**63)]))
    if kind == 3:
        return AnyValue(double_value=rng.choice([0.0, -1.5, 1e300]))
    if kind == 4:
        return AnyValue(bytes_value=rng.randbytes(rng.randrange(4)))
    if kind == 5:
        return AnyValue(
            array_value=ArrayValue(values=[_any(rng, depth + 1) for _ in range(rng.randrange(3))])
        )
    return AnyValue(kvlist_value=KeyValueList(values=_attributes(rng, depth + 1)))


def _attributes(rng: random.Random, depth: int = 0) -> list[KeyValue]:
    return [KeyValue(key=f"k{rng.randrange(5)}", value=_any(rng, depth)) for _ in range(rng.randrange(4))]


def _resource_pool(rng: random.Random) -> list[Resource | None]:
    return [
        None,  # field absent
        Resource(),  # present, empty
        Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))]),
        Resource(
            attributes=[KeyValue(key="service.name", value=AnyValue(string_value="payments"))],
            dropped_attributes_count=3,
            entity_refs=[EntityRef(type="service", id_keys=["service.name"], schema_url="e")],
        ),
        Resource(attributes=_attributes(rng)),
    ]


def _scope_pool(rng: random.Random) -> list[InstrumentationScope | None]:
    return [
        None,
        InstrumentationScope(),
        InstrumentationScope(name="io.opentelemetry.http", version="1.2.3"),
        InstrumentationScope(name="db", attributes=_attributes(rng), dropped_attributes_count=1),
    ]


def _trace_id(rng: random.Random, traces: list[bytes]) -> bytes:
    roll = rng.random()
    if roll < 0.7:
        return rng.choice(traces)
    return rng.choice(
        [
            b"",
            bytes(16),  # all zero: invalid
            rng.randbytes(8),  # short
            rng.randbytes(17),  # long
            rng.randbytes(15),
            bytes(8) + b"\x00" * 7 + b"\x01",  # valid: low bits 1
            b"\x01" + bytes(15),  # valid: low 64 bits all zero -> partition 0
        ]
    )


def _span_id(rng: random.Random) -> bytes:
    if rng.random() < 0.8:
        return rng.randbytes(8)
    return rng.choice(
        [
            b"",
            bytes(8),  # all zero: invalid
            rng.randbytes(7),  # short
            rng.randbytes(9),  # long
            rng.randbytes(16),
            bytes(7) + b"\x01",  # valid
        ]
    )


def _span(rng: random.Random, traces: list[bytes]) -> Span:
    start = 1_763_700_000_000_000_000 + rng.randrange(10**12)
    return Span(
        trace_id=_trace_id(rng, traces),
        span_id=_span_id(rng),
        # malformed now and then: the span is rejected (no OTLP decoder would take it)
        parent_span_id=rng.randbytes(7) if rng.random() < 0.05 else rng.choice([b"", rng.randbytes(8)]),
        trace_state=rng.choice(["", "vendor=1"]),
        name=rng.choice(["GET /api/v1/orders", "db.query", ""]),
        kind=rng.choice([Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_UNSPECIFIED]),
        start_time_unix_nano=start,
        end_time_unix_nano=start + rng.randrange(10**8),
        attributes=_attributes(rng),
        dropped_attributes_count=rng.randrange(2),
        events=[
            Span.Event(time_unix_nano=start, name="exception", attributes=_attributes(rng))
            for _ in range(rng.randrange(3))
        ],
        links=[
            Span.Link(
                trace_id=rng.randbytes(15) if rng.random() < 0.05 else rng.choice([*traces, b""]),
                span_id=rng.randbytes(9) if rng.random() < 0.05 else rng.choice([rng.randbytes(8), b""]),
                attributes=_attributes(rng),
                flags=1,
            )
            for _ in range(rng.randrange(2))
        ],
        status=rng.choice([None, Status(code=Status.STATUS_CODE_ERROR, message="boom"), Status()]),
        flags=rng.choice([0, 0x100, 0x301]),
    )


def _log(rng: random.Random, traces: list[bytes]) -> LogRecord:
    now = 1_763_700_000_000_000_000 + rng.randrange(10**12)
    traced = rng.random() < 0.6
    return LogRecord(
        time_unix_nano=rng.choice([0, now]),
        observed_time_unix_nano=now,
        severity_number=rng.randrange(25),  # type: ignore[arg-type]
        severity_text=rng.choice(["", "INFO", "ERROR"]),
        body=rng.choice([None, _any(rng)]),
        attributes=_attributes(rng),
        flags=rng.choice([0, 1]),
        trace_id=_trace_id(rng, traces) if traced else b"",
        span_id=_span_id(rng) if traced else b"",  # optional: never checked
        event_name=rng.choice(["", "browser.click"]),
    )


def traces_request(rng: random.Random, max_items: int = 25) -> ExportTraceServiceRequest:
    traces = [rng.randbytes(16) for _ in range(rng.randrange(1, 12))]
    resources, scopes = _resource_pool(rng), _scope_pool(rng)
    request = ExportTraceServiceRequest()
    for _ in range(rng.randrange(5)):
        entry = request.resource_spans.add(
            schema_url=rng.choice(["", "https://opentelemetry.io/schemas/1.26.0"])
        )
        resource = rng.choice(resources)
        if resource is not None:
            entry.resource.CopyFrom(resource)
        for _ in range(rng.randrange(4)):
            scope_entry = entry.scope_spans.add(schema_url=rng.choice(["", "s1", "s2"]))
            scope = rng.choice(scopes)
            if scope is not None:
                scope_entry.scope.CopyFrom(scope)
            scope_entry.spans.extend(_span(rng, traces) for _ in range(rng.randrange(max_items)))
    return request


def logs_request(rng: random.Random, max_items: int = 25) -> ExportLogsServiceRequest:
    traces = [rng.randbytes(16) for _ in range(rng.randrange(1, 12))]
    resources, scopes = _resource_pool(rng), _scope_pool(rng)
    request = ExportLogsServiceRequest()
    for _ in range(rng.randrange(5)):
        entry = request.resource_logs.add(
            schema_url=rng.choice(["", "https://opentelemetry.io/schemas/1.26.0"])
        )
        resource = rng.choice(resources)
        if resource is not None:
            entry.resource.CopyFrom(resource)
        for _ in range(rng.randrange(4)):
            scope_entry = entry.scope_logs.add(schema_url=rng.choice(["", "s1"]))
            scope = rng.choice(scopes)
            if scope is not None:
                scope_entry.scope.CopyFrom(scope)
            scope_entry.log_records.extend(_log(rng, traces) for _ in range(rng.randrange(max_items)))
    return request


# ---------------------------------------------------------------------------------- checks


def _native_traces(body: bytes, partitions: int) -> CountedSplit:
    records, total, rejected, rejected_span_id, rejected_related_id = tether_fastlog.split_traces(
        body, partitions
    )
    return CountedSplit(
        dict(records),
        rejected,
        total,
        rejected_span_id=rejected_span_id,
        rejected_related_id=rejected_related_id,
    )


def _native_logs(body: bytes, partitions: int, untraced: int) -> CountedSplit:
    records, total, cleared_trace_id, cleared_span_id = tether_fastlog.split_logs(body, partitions, untraced)
    return CountedSplit(
        dict(records), 0, total, cleared_trace_id=cleared_trace_id, cleared_span_id=cleared_span_id
    )


def _items(request: Any) -> list[Any]:
    if isinstance(request, ExportTraceServiceRequest):
        return [s for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]
    return [x for r in request.resource_logs for sl in r.scope_logs for x in sl.log_records]


def _flat(request: Any) -> list[tuple[Any, Any, Any]]:
    """(resource, scope, item) of every item, in order: the content, whatever the grouping."""
    if isinstance(request, ExportTraceServiceRequest):
        return [
            (r.resource, s.scope, x) for r in request.resource_spans for s in r.scope_spans for x in s.spans
        ]
    return [
        (r.resource, s.scope, x) for r in request.resource_logs for s in r.scope_logs for x in s.log_records
    ]


def _assert_same(
    native: CountedSplit,
    reference: CountedSplit,
    message: type[ExportTraceServiceRequest] | type[ExportLogsServiceRequest],
    partitions: int,
    untraced: int | None,
    *,
    same_bytes: bool,
    exact: bool = True,
) -> None:
    """exact=False lets the grouping differ where equal resources / scopes have different bytes
    (agent/split.py: the native path compares bytes, the reference messages)."""
    assert (
        native.total,
        native.rejected,
        native.rejected_span_id,
        native.rejected_related_id,
        native.cleared_trace_id,
        native.cleared_span_id,
    ) == (
        reference.total,
        reference.rejected,
        reference.rejected_span_id,
        reference.rejected_related_id,
        reference.cleared_trace_id,
        reference.cleared_span_id,
    )
    assert native.records.keys() == reference.records.keys()
    placed = 0
    for partition, value in native.records.items():
        parsed, expected = message.FromString(value), message.FromString(reference.records[partition])
        assert _flat(parsed) == _flat(expected), f"partition {partition}: items differ"
        if exact:
            assert parsed == expected, f"partition {partition} differs"
        if same_bytes:
            assert value == reference.records[partition], f"partition {partition}: bytes differ"
        # independently of the reference: each item sits where partition_for_trace says
        for item in _items(parsed):
            assert_valid_otlp_ids(item)
            if message is ExportTraceServiceRequest:
                assert is_valid_span_id(item.span_id)
            if is_valid_trace_id(item.trace_id):
                assert partition_for_trace(item.trace_id, partitions) == partition
            else:
                assert untraced is not None and partition == untraced
            placed += 1
    assert placed == native.total - native.rejected


def assert_valid_otlp_ids(item: Span | LogRecord) -> None:
    """What the OpenTelemetry Collector's decoder requires of every id it reads (it refuses the
    whole request otherwise): empty, or 16 bytes for a trace id, 8 for a span id."""
    assert len(item.trace_id) in (0, 16), item.trace_id.hex()
    assert len(item.span_id) in (0, 8), item.span_id.hex()
    if isinstance(item, Span):
        assert len(item.parent_span_id) in (0, 8), item.parent_span_id.hex()
        for link in item.links:
            assert len(link.trace_id) in (0, 16) and len(link.span_id) in (0, 8)


def _flags(record: LogRecord) -> list[str]:
    return [a.key for a in record.attributes if a.key in (ATTR_INVALID_TRACE_ID, ATTR_INVALID_SPAN_ID)]


def check_traces(body: bytes, partitions: int, *, same_bytes: bool = True) -> CountedSplit:
    native = _native_traces(body, partitions)
    reference = reference_split_traces_bytes(body, partitions)
    _assert_same(native, reference, ExportTraceServiceRequest, partitions, None, same_bytes=same_bytes)
    return native


def check_logs(body: bytes, partitions: int, untraced: int, *, same_bytes: bool = True) -> CountedSplit:
    native = _native_logs(body, partitions, untraced)
    reference = reference_split_logs_bytes(body, partitions, untraced)
    _assert_same(native, reference, ExportLogsServiceRequest, partitions, untraced, same_bytes=same_bytes)
    return native


# ---------------------------------------------------------------------------------- generated


@pytest.mark.parametrize("seed", range(60))
def test_traces_match_reference(seed: int) -> None:
    rng = random.Random(seed)
    request = traces_request(rng)
    body = request.SerializeToString()
    partitions = rng.choice([1, 2, 3, 7, 16])
    result = check_traces(body, partitions)
    assert result.total == len(_items(request))
    spans = _items(request)
    related_ok = [
        len(s.parent_span_id) in (0, 8)
        and all(len(x.trace_id) in (0, 16) and len(x.span_id) in (0, 8) for x in s.links)
        for s in spans
    ]
    assert result.rejected == sum(
        not (is_valid_trace_id(s.trace_id) and is_valid_span_id(s.span_id) and ok)
        for s, ok in zip(spans, related_ok, strict=True)
    )
    assert result.rejected_span_id == sum(
        is_valid_trace_id(s.trace_id) and not is_valid_span_id(s.span_id) for s in spans
    )
    assert result.rejected_related_id == sum(
        is_valid_trace_id(s.trace_id) and is_valid_span_id(s.span_id) and not ok
        for s, ok in zip(spans, related_ok, strict=True)
    )


@pytest.mark.parametrize("seed", range(60))
def test_logs_match_reference(seed: int) -> None:
    rng = random.Random(1000 + seed)
    request = logs_request(rng)
    body = request.SerializeToString()
    partitions = rng.choice([1, 2, 3, 7, 16])
    result = check_logs(body, partitions, rng.randrange(partitions))
    records = _items(request)
    assert result.total == len(records)
    assert result.rejected == 0
    bad_trace = [bool(r.trace_id) and not is_valid_trace_id(r.trace_id) for r in records]
    bad_span = [
        not bad and not is_wellformed_span_id(r.span_id) for r, bad in zip(records, bad_trace, strict=True)
    ]
    assert (result.cleared_trace_id, result.cleared_span_id) == (sum(bad_trace), sum(bad_span))
    written = [
        x for value in result.records.values() for x in _items(ExportLogsServiceRequest.FromString(value))
    ]
    assert sum(_flags(x) == [ATTR_INVALID_TRACE_ID] for x in written) == sum(bad_trace)
    assert sum(_flags(x) == [ATTR_INVALID_SPAN_ID] for x in written) == sum(bad_span)


def test_bench_shaped_request() -> None:
    """500 spans of random traces under one resource and scope, like bench/agent_bench.py."""
    rng = random.Random(7)
    spans = [
        Span(trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name="GET /api/v1/orders")
        for _ in range(500)
    ]
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))]
                ),
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )
    result = check_traces(request.SerializeToString(), 8)
    assert result.total == 500 and result.rejected == 0
    assert set(result.records) == set(range(8))


def test_partition_is_low_64_bits_big_endian() -> None:
    """Hand-computed partitions: a swapped byte order or the high half would land elsewhere."""
    cases = [
        (bytes(range(1, 9)) + (5).to_bytes(8, "big"), 7, 5),
        (bytes(range(1, 9)) + (12).to_bytes(8, "big"), 7, 5),
        (bytes(8) + b"\xff" * 8, 7, (2**64 - 1) % 7),  # unsigned, not negative
        (b"\x09" * 8 + (2**63 + 3).to_bytes(8, "big"), 10, (2**63 + 3) % 10),
        (b"\xff" * 8 + bytes(8), 3, 0),  # valid (not all zero); low half zero
        (b"\x00" * 15 + b"\x01", 1000, 1),
    ]
    for trace_id, partitions, expected in cases:
        body = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    scope_spans=[ScopeSpans(spans=[Span(span_id=SPAN_ID, trace_id=trace_id, name="s")])]
                )
            ]
        ).SerializeToString()
        result = check_traces(body, partitions)
        assert list(result.records) == [expected], (trace_id.hex(), partitions)
        logs = ExportLogsServiceRequest(
            resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord(trace_id=trace_id)])])]
        ).SerializeToString()
        assert list(check_logs(logs, partitions, (expected + 1) % partitions).records) == [expected]


def test_grouping_of_consecutive_equal_resources_and_scopes() -> None:
    """Equal consecutive resources / scopes share one ResourceSpans / ScopeSpans per partition,
    keeping the first schema_url; a different one in between starts new ones."""
    a = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="a"))])
    b = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="b"))])
    s = InstrumentationScope(name="s")
    t0 = bytes(8) + (0).to_bytes(7, "big") + b"\x02"  # partition 0 of 2
    t1 = bytes(8) + (0).to_bytes(7, "big") + b"\x03"  # partition 1 of 2
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=a,
                schema_url="first",
                scope_spans=[ScopeSpans(scope=s, spans=[Span(span_id=SPAN_ID, trace_id=t0, name="1")])],
            ),
            ResourceSpans(
                resource=b,
                scope_spans=[ScopeSpans(scope=s, spans=[Span(span_id=SPAN_ID, trace_id=t1, name="2")])],
            ),
            ResourceSpans(
                resource=a,
                schema_url="second",
                scope_spans=[
                    ScopeSpans(
                        scope=s,
                        schema_url="x",
                        spans=[
                            Span(span_id=SPAN_ID, trace_id=t0, name="3"),
                            Span(span_id=SPAN_ID, trace_id=t1, name="4"),
                        ],
                    ),
                    ScopeSpans(
                        scope=InstrumentationScope(), spans=[Span(span_id=SPAN_ID, trace_id=t0, name="5")]
                    ),
                ],
            ),
        ]
    )
    result = check_traces(request.SerializeToString(), 2)
    p0 = ExportTraceServiceRequest.FromString(result.records[0])
    assert len(p0.resource_spans) == 1 and p0.resource_spans[0].schema_url == "first"
    assert [[s.name for s in ss.spans] for ss in p0.resource_spans[0].scope_spans] == [["1", "3"], ["5"]]
    p1 = ExportTraceServiceRequest.FromString(result.records[1])
    assert [r.resource for r in p1.resource_spans] == [b, a]


def test_empty_requests() -> None:
    for body in (
        b"",
        ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(), ResourceSpans(scope_spans=[ScopeSpans()])]
        ).SerializeToString(),
    ):
        assert check_traces(body, 4) == CountedSplit({}, 0, 0)
        assert split_traces_bytes(body, 4) == CountedSplit({}, 0, 0)
    assert check_logs(b"", 4, 1) == CountedSplit({}, 0, 0)
    assert split_logs_bytes(b"", 4, 1) == CountedSplit({}, 0, 0)


def test_spans_without_a_valid_span_id_are_rejected() -> None:
    """8 bytes, not all zero (OTLP); counted apart when the trace id is valid; a log record's
    span_id stays optional."""
    trace_id = b"\x01" * 15 + b"\x02"
    span_ids = {"empty": b"", "short": b"\x01" * 7, "long": b"\x01" * 9, "zero": bytes(8), "ok": SPAN_ID}
    spans = [Span(trace_id=trace_id, span_id=v, name=k) for k, v in span_ids.items()]
    spans.append(Span(name="no ids"))  # counted as an invalid trace id
    body = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    ).SerializeToString()
    result = check_traces(body, 3)
    assert (result.total, result.rejected, result.rejected_span_id) == (6, 5, 4)
    (value,) = result.records.values()
    assert [s.name for s in _items(ExportTraceServiceRequest.FromString(value))] == ["ok"]
    records = [LogRecord(trace_id=trace_id, span_id=v) for v in span_ids.values()]
    body = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    ).SerializeToString()
    result = check_logs(body, 3, 0)
    assert (result.total, result.rejected, result.rejected_span_id) == (5, 0, 0)


def test_only_rejected_spans() -> None:
    body = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[ScopeSpans(spans=[Span(name="a"), Span(span_id=SPAN_ID, trace_id=bytes(16))])]
            )
        ]
    ).SerializeToString()
    assert check_traces(body, 3) == CountedSplit({}, 2, 2)


def test_unknown_fields() -> None:
    """Dropped at the request / ResourceSpans / ScopeSpans level (the reference builds fresh
    ones), kept inside resource, scope and span; wrong wire types inside them are unknown too."""
    unknown = (
        b"\xf8\x07\x2a"
        + b"\xfa\x07\x02hi"
        + b"\xfd\x07\x01\x02\x03\x04"
        + b"\xf9\x07"
        + bytes(8)
        + b"\xfb\x07\x08\x01\xfc\x07"
    )
    span = (
        Span(span_id=SPAN_ID, trace_id=b"\x01" * 16, name="s").SerializeToString() + unknown + b"\x28\x05"
    )  # name as varint
    resource = Resource().SerializeToString() + unknown
    scope = InstrumentationScope(name="n").SerializeToString() + unknown
    scope_spans = _ld(0x0A, scope) + _ld(0x12, span) + unknown
    resource_spans = _ld(0x0A, resource) + _ld(0x12, scope_spans) + unknown
    body = unknown + _ld(0x0A, resource_spans) + unknown
    result = check_traces(body, 3, same_bytes=False)
    (value,) = result.records.values()
    parsed = ExportTraceServiceRequest.FromString(value)
    assert parsed.resource_spans[0].resource.SerializeToString().endswith(unknown)
    assert (
        parsed.resource_spans[0].scope_spans[0].spans[0].SerializeToString().endswith(unknown + b"\x28\x05")
    )
    assert len(UnknownFieldSet(parsed)) == 0
    assert len(UnknownFieldSet(parsed.resource_spans[0])) == 0
    assert len(UnknownFieldSet(parsed.resource_spans[0].scope_spans[0])) == 0


def test_repeated_singular_fields_merge() -> None:
    """A resource or scope given twice is merged, schema_url and trace_id: the last one wins."""
    r1 = Resource(attributes=[KeyValue(key="a", value=AnyValue(int_value=1))]).SerializeToString()
    r2 = Resource(dropped_attributes_count=2).SerializeToString()
    first, last = b"\x01" * 16, bytes(8) + b"\x00" * 7 + b"\x04"
    # span_id all zero then valid: the last one wins too
    span = _ld(0x0A, first) + _ld(0x12, bytes(8)) + _ld(0x2A, b"name") + _ld(0x0A, last) + _ld(0x12, SPAN_ID)
    scope_spans = (
        _ld(0x12, span)
        + _ld(0x0A, b"\x0a\x01x")
        + _ld(0x0A, b"\x12\x01y")
        + _ld(0x1A, b"u1")
        + _ld(0x1A, b"u2")
    )
    resource_spans = _ld(0x0A, r1) + _ld(0x12, scope_spans) + _ld(0x0A, r2) + _ld(0x1A, b"v")
    result = check_traces(_ld(0x0A, resource_spans), 5, same_bytes=False)
    assert list(result.records) == [4 % 5]
    parsed = ExportTraceServiceRequest.FromString(result.records[4])
    assert parsed.resource_spans[0].resource.dropped_attributes_count == 2
    assert parsed.resource_spans[0].scope_spans[0].scope == InstrumentationScope(name="x", version="y")
    assert parsed.resource_spans[0].scope_spans[0].schema_url == "u2"


def test_equal_resources_with_different_bytes_are_not_merged() -> None:
    """The documented difference: the reference merges consecutive resources that are equal
    as messages; the native path only when their bytes are equal. Same items, same places."""
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="a"))])
    explicit_zero = resource.SerializeToString() + b"\x10\x00"  # dropped_attributes_count=0, spelled out
    span = Span(span_id=SPAN_ID, trace_id=b"\x01" * 16, name="s").SerializeToString()
    entry = _ld(0x12, _ld(0x12, span))
    body = _ld(0x0A, _ld(0x0A, resource.SerializeToString()) + entry) + _ld(
        0x0A, _ld(0x0A, explicit_zero) + entry
    )
    native, reference = _native_traces(body, 2), reference_split_traces_bytes(body, 2)
    _assert_same(native, reference, ExportTraceServiceRequest, 2, None, same_bytes=False, exact=False)
    (partition,) = native.records
    assert len(ExportTraceServiceRequest.FromString(native.records[partition]).resource_spans) == 2
    assert len(ExportTraceServiceRequest.FromString(reference.records[partition]).resource_spans) == 1


def test_unknown_groups_as_the_decoder_reads_them() -> None:
    """Inside an unknown group upb lets field number 0 through; both paths accept it."""
    span = (
        Span(span_id=SPAN_ID, trace_id=b"\x01" * 16, name="s").SerializeToString()
        + b"\x2b\x00\x01\x03\x04\x05"
        + bytes(4)
        + b"\x2c"
    )
    body = b"\x2b\x02\x00\x2c" + _ld(0x0A, _ld(0x12, _ld(0x12, span)) + b"\x3b\x00\x01\x3c")
    assert check_traces(body, 3, same_bytes=False).total == 1


# ---------------------------------------------------------------------------------- malformed


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: int, payload: bytes) -> bytes:
    return _varint(tag) + _varint(len(payload)) + payload


def _nest(levels: int) -> bytes:
    """A span whose attribute value nests `levels` ArrayValue/AnyValue pairs, under one
    ResourceSpans and ScopeSpans: request > 1 > 2 > span 3 > KeyValue 4 > AnyValue 5 > ..."""
    value = _ld(0x0A, b"leaf")
    for _ in range(levels):
        value = _ld(0x2A, _ld(0x0A, value))
    span = _ld(0x0A, b"\x01" * 16) + _ld(0x4A, _ld(0x12, value))
    return _ld(0x0A, _ld(0x12, _ld(0x12, span)))


_SPAN = Span(span_id=SPAN_ID, trace_id=b"\x01" * 16, name="ok").SerializeToString()
_SCOPE_SPANS = _ld(0x12, _SPAN)
_RESOURCE_SPANS = _ld(0x12, _SCOPE_SPANS)

MALFORMED_TRACES = {
    "garbage": b"\xff\xff\xff\xff",
    "text": b"this is not protobuf at all",
    "json": b'{"resourceSpans": []}',
    "truncated length": _ld(0x0A, _RESOURCE_SPANS)[:-1],
    "length past end": b"\x0a\x7f\x12\x00",
    "bad varint": b"\x0a" + b"\xff" * 11,
    "truncated varint": b"\x08\xff",
    "field number 0": b"\x02\x00",
    "wire type 7": b"\x0f",
    "stray end group": b"\x0c",
    "unterminated group": b"\x2b\x08\x01",
    "mismatched group": b"\x2b\x08\x01\x34",
    "resource_spans as varint": b"\x08\x01",
    "resource_spans as fixed32": b"\x0d\x00\x00\x00\x00",
    "resource as varint": _ld(0x0A, b"\x08\x01" + _RESOURCE_SPANS),
    "scope_spans as fixed64": _ld(0x0A, b"\x11" + bytes(8)),
    "resource schema_url as varint": _ld(0x0A, b"\x18\x01"),
    "scope as varint": _ld(0x0A, _ld(0x12, b"\x08\x00")),
    "spans as varint": _ld(0x0A, _ld(0x12, b"\x10\x00")),
    "scope schema_url as group": _ld(0x0A, _ld(0x12, b"\x1b\x1c")),
    "trace_id as varint": _ld(0x0A, _ld(0x12, _ld(0x12, b"\x08\x01"))),
    "trace_id as fixed64": _ld(0x0A, _ld(0x12, _ld(0x12, b"\x09" + bytes(8)))),
    "span_id as varint": _ld(0x0A, _ld(0x12, _ld(0x12, _ld(0x0A, b"\x01" * 16) + b"\x10\x01"))),
    "span_id as fixed64": _ld(0x0A, _ld(0x12, _ld(0x12, _ld(0x0A, b"\x01" * 16) + b"\x11" + bytes(8)))),
    "parent_span_id as varint": _ld(0x0A, _ld(0x12, _ld(0x12, _SPAN + b"\x20\x01"))),
    "links as fixed32": _ld(0x0A, _ld(0x12, _ld(0x12, _SPAN + b"\x6d" + bytes(4)))),
    "truncated span": _ld(0x0A, _ld(0x12, _ld(0x12, _SPAN[:-2]))),
    "span name invalid utf-8": _ld(0x0A, _ld(0x12, _ld(0x12, _ld(0x0A, b"\x01" * 16) + _ld(0x2A, b"\xff")))),
    "attribute key surrogate": _ld(0x0A, _ld(0x12, _ld(0x12, _ld(0x4A, _ld(0x0A, b"\xed\xa0\x80"))))),
    "resource attribute invalid utf-8": _ld(0x0A, _ld(0x0A, _ld(0x0A, _ld(0x12, _ld(0x0A, b"\xc0\x80"))))),
    "schema_url invalid utf-8": _ld(0x0A, _ld(0x1A, b"\xfe")),
    "scope name invalid utf-8": _ld(0x0A, _ld(0x12, _ld(0x0A, _ld(0x0A, b"\x80")))),
    "event truncated fixed64": _ld(0x0A, _ld(0x12, _ld(0x12, _ld(0x5A, b"\x09\x00")))),
    "nested deeper than 100": _nest(48),
    "group deeper than 100": b"\x2b" * 101 + b"\x2c" * 101,
    "tag over 32 bits": b"\xfa\xff\xff\xff\x1f\x00",
    "length over 5 bytes": b"\x0a" + b"\x80" * 5 + b"\x00",
}


@pytest.mark.parametrize("name", list(MALFORMED_TRACES))
def test_malformed_traces_raise_in_both_paths(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    body = MALFORMED_TRACES[name]
    with pytest.raises(ValueError, match="ExportTraceServiceRequest") as native:
        _native_traces(body, 4)
    with pytest.raises(ValueError, match="ExportTraceServiceRequest"):
        reference_split_traces_bytes(body, 4)
    with pytest.raises(ValueError, match="ExportTraceServiceRequest"):
        split_traces_bytes(body, 4)
    monkeypatch.setattr(agent_split, "_native", None)
    with pytest.raises(ValueError, match="ExportTraceServiceRequest"):
        split_traces_bytes(body, 4)
    assert str(native.value).startswith("invalid ExportTraceServiceRequest: ")


def test_depth_limit_is_the_decoders() -> None:
    """100 levels below the request decode; 101 do not (ValueError above)."""
    assert check_traces(_nest(47), 2, same_bytes=False).total == 1


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\x00",
        _ld(0x0A, b"\x08\x01"),  # resource as varint
        _ld(0x0A, _ld(0x12, _ld(0x12, b"\x48\x01"))),  # LogRecord.trace_id (9) as varint
        _ld(0x0A, _ld(0x12, _ld(0x12, _ld(0x2A, _ld(0x0A, b"\xff"))))),  # body string_value bad UTF-8
        _ld(0x0A, _ld(0x12, _ld(0x12, _ld(0x4A, b"\x01" * 16))))[:-3],
    ],
)
def test_malformed_logs_raise_in_both_paths(body: bytes) -> None:
    with pytest.raises(ValueError, match="ExportLogsServiceRequest"):
        _native_logs(body, 4, 0)
    with pytest.raises(ValueError, match="ExportLogsServiceRequest"):
        reference_split_logs_bytes(body, 4, 0)


def _outcome(split: Callable[[], CountedSplit]) -> CountedSplit | None:
    try:
        return split()
    except ValueError:
        return None


def _mutations(rng: random.Random, body: bytes) -> list[bytes]:
    inserts = [b"\x08", b"\x0a", b"\x12", b"\x80", b"\xff", b"\x00", b"\x03\x04", b"\x0b", b"\x2c"]
    out = []
    for _ in range(40):
        data = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(data) + 1)
            op = rng.randrange(6)
            if op == 0 and i < len(data):
                data[i] = rng.randrange(256)
            elif op == 1 and i < len(data):
                data[i] ^= 1 << rng.randrange(8)
            elif op == 2:
                data[i:i] = rng.choice([*inserts, bytes([rng.randrange(256)])])
            elif op == 3:
                del data[i : i + rng.randrange(1, 4)]
            elif op == 4:
                j = rng.randrange(len(data) + 1)
                data[i:i] = data[min(i, j) : max(i, j)][:16]
            else:  # wrap bytes in an unknown group (field 5, or field 0)
                j = rng.randrange(i, len(data) + 1)
                begin, end = rng.choice([(b"\x2b", b"\x2c"), (b"\x03", b"\x04")])
                data[i:j] = begin + data[i:j] + end
        out.append(bytes(data))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_mutated_bodies_accepted_or_refused_alike(seed: int) -> None:
    rng = random.Random(5000 + seed)
    traces = seed % 2 == 0
    request = traces_request(rng, 4) if traces else logs_request(rng, 4)
    body = request.SerializeToString()
    for mutated in [
        *_mutations(rng, body),
        *(body[:i] for i in range(0, len(body), max(1, len(body) // 40))),
    ]:
        if traces:
            native = _outcome(lambda: _native_traces(mutated, 3))  # noqa: B023
            reference = _outcome(lambda: reference_split_traces_bytes(mutated, 3))  # noqa: B023
        else:
            native = _outcome(lambda: _native_logs(mutated, 3, 2))  # noqa: B023
            reference = _outcome(lambda: reference_split_logs_bytes(mutated, 3, 2))  # noqa: B023
        assert (native is None) == (reference is None), mutated.hex()
        if native is not None and reference is not None:
            message = ExportTraceServiceRequest if traces else ExportLogsServiceRequest
            _assert_same(native, reference, message, 3, None if traces else 2, same_bytes=False, exact=False)


# ---------------------------------------------------------------------------------- wrapper


def test_dispatch_native_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(99)
    traces = traces_request(rng).SerializeToString()
    logs = logs_request(rng).SerializeToString()
    assert agent_split.native_available()
    native = (split_traces_bytes(traces, 5), split_logs_bytes(logs, 5, 4))
    monkeypatch.setattr(agent_split, "_native", None)
    assert not agent_split.native_available()
    assert (split_traces_bytes(traces, 5), split_logs_bytes(logs, 5, 4)) == native


@pytest.mark.parametrize("use_native", [True, False])
def test_bad_partition_arguments(use_native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not use_native:
        monkeypatch.setattr(agent_split, "_native", None)
    with pytest.raises(ValueError, match="partitions"):
        split_traces_bytes(b"", 0)
    with pytest.raises(ValueError, match="untraced_partition"):
        split_logs_bytes(b"", 3, 3)
    with pytest.raises(ValueError, match="untraced_partition"):
        split_logs_bytes(b"", 3, -1)


def test_native_schema_matches_descriptors() -> None:
    """The native validator's idea of the OTLP schema is the installed opentelemetry-proto's."""
    kinds = {
        FieldDescriptor.TYPE_STRING: "string",
        FieldDescriptor.TYPE_BYTES: "bytes",
        FieldDescriptor.TYPE_MESSAGE: "message",
        FieldDescriptor.TYPE_DOUBLE: "fixed64",
        FieldDescriptor.TYPE_FIXED64: "fixed64",
        FieldDescriptor.TYPE_SFIXED64: "fixed64",
        FieldDescriptor.TYPE_FIXED32: "fixed32",
        FieldDescriptor.TYPE_SFIXED32: "fixed32",
        FieldDescriptor.TYPE_FLOAT: "fixed32",
    }
    expected: set[tuple[str, int, str, str, str | None]] = set()
    seen: set[str] = set()

    def walk(descriptor: Descriptor) -> None:
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            sub = field.message_type.full_name if field.message_type is not None else None
            expected.add(
                (descriptor.full_name, field.number, field.name, kinds.get(field.type, "varint"), sub)
            )
            if field.message_type is not None:
                walk(field.message_type)

    walk(ExportTraceServiceRequest.DESCRIPTOR)
    walk(ExportLogsServiceRequest.DESCRIPTOR)
    assert set(tether_fastlog.split_schema()) == expected


# ---------------------------------------------------------------------------------- malformed ids


def test_log_records_with_malformed_ids_are_kept_without_them() -> None:
    """A trace id neither empty nor valid goes with its span id, a span id neither empty nor 8
    bytes alone: the record stays (untraced without its trace id), flagged, and valid OTLP."""
    valid_trace, valid_span = b"\x01" * 15 + b"\x02", SPAN_ID
    cases = {
        "15-byte trace": (b"\x01" * 15, valid_span, ATTR_INVALID_TRACE_ID),
        "17-byte trace": (b"\x01" * 17, valid_span, ATTR_INVALID_TRACE_ID),
        "zero trace": (bytes(16), b"\x01" * 7, ATTR_INVALID_TRACE_ID),
        "7-byte span": (valid_trace, b"\x01" * 7, ATTR_INVALID_SPAN_ID),
        "16-byte span": (valid_trace, b"\x01" * 16, ATTR_INVALID_SPAN_ID),
        "untraced 9-byte span": (b"", b"\x01" * 9, ATTR_INVALID_SPAN_ID),
        "zero span": (valid_trace, bytes(8), None),  # 8 bytes: valid OTLP, kept
        "ok": (valid_trace, valid_span, None),
        "untraced": (b"", b"", None),
    }
    existing = KeyValue(key="k", value=AnyValue(int_value=1))
    records = [
        LogRecord(
            trace_id=trace_id,
            span_id=span_id,
            body=AnyValue(string_value=name),
            attributes=[existing] if index % 2 else [],
            flags=1,
            observed_time_unix_nano=5,
        )
        for index, (name, (trace_id, span_id, _)) in enumerate(cases.items())
    ]
    body = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    ).SerializeToString()
    untraced = 2
    result = check_logs(body, 4, untraced)  # native and reference: the same bytes
    assert (result.total, result.rejected, result.cleared_trace_id, result.cleared_span_id) == (9, 0, 3, 3)
    written = {
        x.body.string_value: (partition, x)
        for partition, value in result.records.items()
        for x in _items(ExportLogsServiceRequest.FromString(value))
    }
    assert written.keys() == cases.keys()
    for index, (name, (trace_id, span_id, flag)) in enumerate(cases.items()):
        partition, record = written[name]
        assert_valid_otlp_ids(record)
        assert _flags(record) == ([flag] if flag else []), name
        assert [a for a in record.attributes if a.key == "k"] == ([existing] if index % 2 else [])
        if flag == ATTR_INVALID_TRACE_ID:
            assert (record.trace_id, record.span_id, partition) == (b"", b"", untraced)
            assert record.attributes[-1].value == AnyValue(bool_value=True)
        elif flag == ATTR_INVALID_SPAN_ID:
            assert (record.trace_id, record.span_id) == (trace_id, b"")
        else:
            assert (record.trace_id, record.span_id) == (trace_id, span_id)
        if record.trace_id:
            assert partition == partition_for_trace(record.trace_id, 4)
        else:
            assert partition == untraced
        assert (record.flags, record.observed_time_unix_nano) == (1, 5)


def test_a_log_span_id_of_another_wire_type_is_refused() -> None:
    """The split reads a log record's span_id now: like its trace_id, another wire type is an
    error, not an unknown field the collector's decoder would refuse."""
    body = _ld(0x0A, _ld(0x12, _ld(0x12, _ld(0x4A, b"\x01" * 16) + b"\x50\x01")))
    with pytest.raises(ValueError, match="ExportLogsServiceRequest"):
        _native_logs(body, 4, 0)
    with pytest.raises(ValueError, match="ExportLogsServiceRequest"):
        reference_split_logs_bytes(body, 4, 0)


def test_spans_with_a_malformed_parent_or_link_id_are_rejected() -> None:
    """A parent_span_id or a link's span_id neither empty nor 8 bytes, or a link's trace_id
    neither empty nor 16 bytes: no OTLP decoder takes the span, so it is rejected."""
    trace_id = b"\x01" * 15 + b"\x02"
    link = Span.Link(trace_id=b"\x03" * 16, span_id=SPAN_ID)
    spans = {
        "7-byte parent": Span(parent_span_id=b"\x01" * 7),
        "16-byte parent": Span(parent_span_id=b"\x01" * 16),
        "15-byte link trace": Span(links=[link, Span.Link(trace_id=b"\x01" * 15, span_id=SPAN_ID)]),
        "9-byte link span": Span(links=[Span.Link(trace_id=b"\x01" * 16, span_id=b"\x01" * 9)]),
        "ok: root": Span(),
        "ok: zero parent": Span(parent_span_id=bytes(8)),
        "ok: links": Span(parent_span_id=SPAN_ID, links=[link, Span.Link()]),
    }
    for name, span in spans.items():
        span.trace_id, span.span_id, span.name = trace_id, SPAN_ID, name
    body = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans.values())])]
    ).SerializeToString()
    result = check_traces(body, 3)
    assert (result.total, result.rejected, result.rejected_span_id, result.rejected_related_id) == (
        7,
        4,
        0,
        4,
    )
    (value,) = result.records.values()
    assert [s.name for s in _items(ExportTraceServiceRequest.FromString(value))] == [
        "ok: root",
        "ok: zero parent",
        "ok: links",
    ]
