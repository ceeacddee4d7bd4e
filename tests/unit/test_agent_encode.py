"""agent.encode: OTLP requests per partition, for file lines and for received OTLP batches."""

from __future__ import annotations

import random

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tether.agent.encode import LOGS, TRACES, FileLine, UntracedSpreader, encode_file_lines, split_request
from tether.agent.parse import ParsedLine, parse_line
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import (
    ATTR_AGENT_ID,
    ATTR_FILE_FINGERPRINT,
    ATTR_FILE_PATH,
    ATTR_PARSE_ERROR,
    ATTR_RECORD_OFFSET,
    ATTR_SERVICE_NAME,
    FILE_SCOPE,
    partition_for_trace,
)

OBSERVED = 1_704_164_700_000_000_000
PATH = "/var/log/app/app.log"
FINGERPRINT = "0123456789abcdef"


def trace(low: int, high: int = 0xABCDEF) -> bytes:
    return high.to_bytes(8, "big") + low.to_bytes(8, "big")


def line(
    trace_id: bytes = b"",
    *,
    span_id: bytes = b"",
    service: str = "checkout",
    text: str = '{"message":"m"}',
    time_ns: int = 1_704_164_645_000_000_000,
    level: str = "info",
    severity: int = 9,
    parse_error: bool = False,
    offset: int = 0,
) -> FileLine:
    return FileLine(
        ParsedLine(text, time_ns, level, severity, trace_id, span_id, service, parse_error), offset
    )


def encode(
    lines: list[FileLine], partitions: int = 4, untraced: int = 3
) -> dict[int, ExportLogsServiceRequest]:
    out = encode_file_lines(
        lines,
        path=PATH,
        fingerprint=FINGERPRINT,
        agent_id="agent-1",
        observed_ns=OBSERVED,
        partitions=partitions,
        untraced_partition=untraced,
    )
    assert all(isinstance(value, bytes) for value in out.values())
    return {p: ExportLogsServiceRequest.FromString(value) for p, value in out.items()}


def records(request: ExportLogsServiceRequest) -> list[LogRecord]:
    return [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def attrs(pairs: object) -> dict[str, object]:
    out = {}
    for kv in pairs:  # type: ignore[attr-defined]
        out[kv.key] = getattr(kv.value, kv.value.WhichOneof("value"))
    return out


# ---------------------------------------------------------------- encode_file_lines


def test_lines_go_to_their_trace_partition_and_untraced_to_the_given_one() -> None:
    lines = [
        line(trace(1), offset=0),  # 1 % 4 = 1
        line(trace(6), offset=10),  # 6 % 4 = 2
        line(b"", offset=20),
        line(trace(9), offset=30),  # 9 % 4 = 1
    ]
    out = encode(lines, partitions=4, untraced=3)
    assert set(out) == {1, 2, 3}
    assert [r.trace_id for r in records(out[1])] == [trace(1), trace(9)]
    assert [r.trace_id for r in records(out[2])] == [trace(6)]
    assert [r.trace_id for r in records(out[3])] == [b""]
    assert [attrs(r.attributes)[ATTR_RECORD_OFFSET] for r in records(out[1])] == [0, 30]


def test_untraced_partition_is_used_even_when_a_trace_partition_matches_it() -> None:
    out = encode([line(trace(0)), line(b"", offset=16)], partitions=4, untraced=0)
    assert set(out) == {0}
    assert [r.trace_id for r in records(out[0])] == [trace(0), b""]


@pytest.mark.parametrize("partitions", [1, 3, 7, 12])
def test_every_record_lands_in_partition_for_trace(partitions: int) -> None:
    rng = random.Random(partitions)
    trace_ids = [rng.randbytes(8) + rng.randbytes(8) for _ in range(60)]
    out = encode([line(t, offset=i) for i, t in enumerate(trace_ids)], partitions=partitions, untraced=0)
    seen = []
    for partition, request in out.items():
        for record in records(request):
            assert partition_for_trace(record.trace_id, partitions) == partition
            seen.append(record.trace_id)
    assert sorted(seen) == sorted(trace_ids)


def test_record_fields() -> None:
    text = '{"@timestamp":"2024-01-02T03:04:05Z","level":"WARN","message":"careful"}'
    out = encode(
        [line(trace(1), span_id=b"\x01" * 8, text=text, level="WARN", severity=13, offset=2**40 + 123)]
    )
    [request] = out.values()
    [resource_logs] = request.resource_logs
    [scope_logs] = resource_logs.scope_logs
    assert scope_logs.scope.name == FILE_SCOPE
    assert attrs(scope_logs.scope.attributes) == {ATTR_FILE_PATH: PATH, ATTR_FILE_FINGERPRINT: FINGERPRINT}
    [record] = scope_logs.log_records
    assert record.body.string_value == text
    assert record.time_unix_nano == 1_704_164_645_000_000_000
    assert record.observed_time_unix_nano == OBSERVED
    assert record.severity_text == "WARN"
    assert record.severity_number == 13
    assert record.trace_id == trace(1)
    assert record.span_id == b"\x01" * 8
    # the offset alone: the path, fingerprint and agent id are shared, the collector rebuilds the id
    assert attrs(record.attributes) == {ATTR_RECORD_OFFSET: 2**40 + 123}
    assert record.attributes[0].value.WhichOneof("value") == "int_value"
    assert attrs(resource_logs.resource.attributes) == {
        ATTR_SERVICE_NAME: "checkout",
        ATTR_AGENT_ID: "agent-1",
    }


def test_missing_timestamp_falls_back_to_observed_time() -> None:
    [request] = encode([line(time_ns=0)]).values()
    [record] = records(request)
    assert record.time_unix_nano == OBSERVED
    assert record.observed_time_unix_nano == OBSERVED


def test_parse_error_attribute() -> None:
    out = encode(
        [
            line(text="not json", parse_error=True, service="", level="", severity=0, offset=0),
            line(offset=9),
        ]
    )
    [request] = out.values()
    by_offset = {attrs(r.attributes)[ATTR_RECORD_OFFSET]: r for r in records(request)}
    bad, good = by_offset[0], by_offset[9]
    assert attrs(bad.attributes) == {ATTR_RECORD_OFFSET: 0, ATTR_PARSE_ERROR: True}
    assert bad.body.string_value == "not json"
    assert ATTR_PARSE_ERROR not in attrs(good.attributes)


def test_lines_are_grouped_by_service_under_their_own_resource() -> None:
    out = encode(
        [
            line(trace(1), service="a", offset=1),
            line(trace(5), service="b", offset=2),
            line(trace(9), service="a", offset=3),
            line(trace(13), service="", offset=4),
        ],
        partitions=4,
    )
    assert set(out) == {1}
    by_service = {}
    for resource_logs in out[1].resource_logs:
        resource = attrs(resource_logs.resource.attributes)
        assert resource[ATTR_AGENT_ID] == "agent-1"
        [scope_logs] = resource_logs.scope_logs  # each resource has the file's scope, whole
        assert attrs(scope_logs.scope.attributes) == {
            ATTR_FILE_PATH: PATH,
            ATTR_FILE_FINGERPRINT: FINGERPRINT,
        }
        offsets = [attrs(r.attributes)[ATTR_RECORD_OFFSET] for r in scope_logs.log_records]
        by_service[resource.get(ATTR_SERVICE_NAME)] = offsets
    assert by_service == {"a": [1, 3], "b": [2], None: [4]}


def test_real_lines_end_to_end() -> None:
    mapping = default_mapping()
    raw = [
        orjson.dumps({"@timestamp": "2024-01-02T03:04:05Z", "level": "info", "trace_id": trace(2).hex()}),
        b"{garbage",
    ]
    lines = [FileLine(parse_line(r, mapping), i) for i, r in enumerate(raw)]
    out = encode(lines, partitions=4, untraced=0)
    assert set(out) == {0, 2}
    [traced] = records(out[2])
    assert traced.body.string_value == raw[0].decode()
    assert traced.time_unix_nano == 1_704_164_645_000_000_000
    [untraced] = records(out[0])
    assert untraced.body.string_value == "{garbage"
    assert attrs(untraced.attributes)[ATTR_PARSE_ERROR] is True


def test_line_with_an_out_of_range_epoch_does_not_break_the_batch() -> None:
    mapping = default_mapping()
    lines = [
        FileLine(parse_line(b'{"ts": -1, "msg": "negative epoch"}', mapping), 0),
        FileLine(parse_line(b'{"ts": 1e300, "msg": "far future"}', mapping), 40),
        FileLine(parse_line(b'{"ts": 1704164645, "msg": "fine"}', mapping), 80),
    ]
    out = encode(lines, partitions=2, untraced=0)
    assert len(records(out[0])) == 3


def test_no_lines_no_records() -> None:
    assert encode([]) == {}


def test_untraced_spreader_cycles() -> None:
    spreader = UntracedSpreader()
    assert [spreader.next_partition(3) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


# ---------------------------------------------------------------- split_request


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span(trace_id: bytes, name: str) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=name.encode().ljust(8, b"\x00")[:8],
        name=name,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=10,
        end_time_unix_nano=20,
        attributes=[kv("k", name)],
    )


R1 = Resource(attributes=[kv("service.name", "a"), kv("host.name", "h1")])
R2 = Resource(attributes=[kv("service.name", "b")])
S1 = InstrumentationScope(name="lib.one", version="1.0")
S2 = InstrumentationScope(name="lib.two", version="2.0")
A, B = trace(3), trace(4)  # partitions 0 and 1 of 3


def traces_request() -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=R1,
                schema_url="https://opentelemetry.io/schemas/1.21.0",
                scope_spans=[
                    ScopeSpans(
                        scope=S1,
                        schema_url="scope-schema",
                        spans=[
                            span(A, "a1"),
                            span(B, "b1"),
                            span(A, "a2"),
                            span(bytes(16), "zero"),
                            span(A[:8], "short"),
                        ],
                    )
                ],
            ),
            ResourceSpans(
                resource=R2, scope_spans=[ScopeSpans(scope=S2, spans=[span(B, "b2"), span(b"", "none")])]
            ),
        ]
    )


def test_split_traces_by_partition_keeping_resource_and_scope() -> None:
    result = split_request(traces_request(), TRACES, 3, None)
    assert result.rejected == 3
    assert set(result.records) == {0, 1}
    first = ExportTraceServiceRequest.FromString(result.records[0])
    second = ExportTraceServiceRequest.FromString(result.records[1])

    [rs] = first.resource_spans
    assert rs.resource == R1
    assert rs.schema_url == "https://opentelemetry.io/schemas/1.21.0"
    [ss] = rs.scope_spans
    assert ss.scope == S1
    assert ss.schema_url == "scope-schema"
    assert list(ss.spans) == [span(A, "a1"), span(A, "a2")]

    assert [rs.resource for rs in second.resource_spans] == [R1, R2]
    assert [[s.scope for s in rs.scope_spans] for rs in second.resource_spans] == [[S1], [S2]]
    assert [[sp.name for s in rs.scope_spans for sp in s.spans] for rs in second.resource_spans] == [
        ["b1"],
        ["b2"],
    ]
    assert second.resource_spans[1].scope_spans[0].spans[0] == span(B, "b2")


def test_split_traces_every_span_in_partition_for_trace() -> None:
    rng = random.Random(7)
    spans = [span(rng.randbytes(16), f"s{i}") for i in range(200)]
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=R1, scope_spans=[ScopeSpans(scope=S1, spans=spans)])]
    )
    result = split_request(request, TRACES, 5, None)
    assert result.rejected == 0
    names = []
    for partition, value in result.records.items():
        for rs in ExportTraceServiceRequest.FromString(value).resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    assert partition_for_trace(s.trace_id, 5) == partition
                    names.append(s.name)
    assert sorted(names) == sorted(s.name for s in spans)


def test_split_empty_request() -> None:
    result = split_request(ExportTraceServiceRequest(), TRACES, 3, None)
    assert (result.records, result.rejected) == ({}, 0)


def log_record(trace_id: bytes, body: str) -> LogRecord:
    return LogRecord(trace_id=trace_id, body=AnyValue(string_value=body), time_unix_nano=1)


def logs_request() -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=R1,
                scope_logs=[
                    ScopeLogs(
                        scope=S1,
                        log_records=[
                            log_record(A, "traced-a"),
                            log_record(b"", "untraced"),
                            log_record(B, "traced-b"),
                            log_record(bytes(16), "zero-trace"),
                        ],
                    )
                ],
            )
        ]
    )


def test_split_logs_untraced_go_to_the_given_partition() -> None:
    result = split_request(logs_request(), LOGS, 3, 2)
    assert result.rejected == 0
    assert set(result.records) == {0, 1, 2}
    bodies = {}
    for partition, value in result.records.items():
        [rl] = ExportLogsServiceRequest.FromString(value).resource_logs
        assert rl.resource == R1
        [sl] = rl.scope_logs
        assert sl.scope == S1
        bodies[partition] = [r.body.string_value for r in sl.log_records]
    assert bodies == {0: ["traced-a"], 1: ["traced-b"], 2: ["untraced", "zero-trace"]}


def test_split_logs_without_untraced_partition_rejects_them() -> None:
    result = split_request(logs_request(), LOGS, 3, None)
    assert result.rejected == 2
    assert set(result.records) == {0, 1}


def test_same_trace_same_partition_in_both_topics() -> None:
    rng = random.Random(99)
    partitions = 6
    for _ in range(40):
        trace_id = rng.randbytes(16)
        log_partitions = set(encode([line(trace_id)], partitions=partitions, untraced=0))
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(resource=R1, scope_spans=[ScopeSpans(scope=S1, spans=[span(trace_id, "x")])])
            ]
        )
        span_partitions = set(split_request(request, TRACES, partitions, None).records)
        assert log_partitions == span_partitions == {partition_for_trace(trace_id, partitions)}
