"""collector.documents: OTLP requests to Elasticsearch documents."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tests.unit.file_layouts import old_layout
from tether.agent.chunks import PythonChunkEncoder
from tether.collector.documents import JSON_MAX_DEPTH, LogDoc, log_documents, span_documents
from tether.collector.sinks.bulk import bulk_bodies
from tether.collector.sinks.elasticsearch import IndexRequest
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import (
    ATTR_AGENT_ID,
    ATTR_FILE_FINGERPRINT,
    ATTR_FILE_PATH,
    ATTR_PARSE_ERROR,
    ATTR_RECORD_ID,
    ATTR_RECORD_OFFSET,
    FILE_SCOPE,
)

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN = bytes.fromhex("b7ad6b7169203331")
PARENT = bytes.fromhex("00f067aa0ba902b7")
T0 = 1_704_164_645_000_000_000  # 2024-01-02T03:04:05Z


def s(value: str) -> AnyValue:
    return AnyValue(string_value=value)


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


# ---------------------------------------------------------------- spans


def spans_request(*spans: Span, service: str | None = "checkout") -> ExportTraceServiceRequest:
    resource = [kv("host.name", s("h1"))]
    if service is not None:
        resource.insert(0, kv("service.name", s(service)))
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=resource),
                scope_spans=[
                    ScopeSpans(scope=InstrumentationScope(name="io.lib", version="1.2"), spans=spans)
                ],
            )
        ]
    )


def test_span_document() -> None:
    span = Span(
        trace_id=TRACE,
        span_id=SPAN,
        parent_span_id=PARENT,
        name="GET /orders",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=T0 + 123,
        end_time_unix_nano=T0 + 123 + 1_500_999,
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
        attributes=[kv("http.status_code", AnyValue(int_value=500)), kv("retry", AnyValue(bool_value=False))],
    )
    [doc] = span_documents(spans_request(span))
    assert doc.doc_id == f"{TRACE.hex()}-{SPAN.hex()}" == "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"
    assert doc.timestamp_ns == T0 + 123
    assert doc.trace_id == TRACE.hex()
    assert doc.span_id == SPAN.hex()
    assert doc.source == {
        "@timestamp": "2024-01-02T03:04:05.000000123Z",
        "trace": {"id": TRACE.hex()},
        "span": {
            "id": SPAN.hex(),
            "name": "GET /orders",
            "kind": "server",
            "status": "ERROR",
            "status_message": "boom",
            "duration": {"us": 1500},
        },
        "parent": {"id": PARENT.hex()},
        "event": {"duration": 1_500_999, "outcome": "failure"},
        "service": {"name": "checkout"},
        "scope": {"name": "io.lib", "version": "1.2"},
        "attributes": {"http.status_code": 500, "retry": False},
        "resource": {"attributes": {"service.name": "checkout", "host.name": "h1"}},
    }


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        (Span.SPAN_KIND_UNSPECIFIED, "unspecified"),
        (Span.SPAN_KIND_INTERNAL, "internal"),
        (Span.SPAN_KIND_SERVER, "server"),
        (Span.SPAN_KIND_CLIENT, "client"),
        (Span.SPAN_KIND_PRODUCER, "producer"),
        (Span.SPAN_KIND_CONSUMER, "consumer"),
    ],
)
def test_span_kind_lowercase(kind: int, name: str) -> None:
    [doc] = span_documents(spans_request(Span(trace_id=TRACE, span_id=SPAN, kind=kind)))  # type: ignore[arg-type]
    assert doc.source["span"]["kind"] == name


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        (Status.STATUS_CODE_UNSET, "UNSET", "unknown"),
        (Status.STATUS_CODE_OK, "OK", "success"),
        (Status.STATUS_CODE_ERROR, "ERROR", "failure"),
    ],
)
def test_span_status(code: int, status: str, outcome: str) -> None:
    span = Span(trace_id=TRACE, span_id=SPAN, status=Status(code=code))  # type: ignore[arg-type]
    [doc] = span_documents(spans_request(span))
    assert doc.source["span"]["status"] == status
    assert doc.source["event"]["outcome"] == outcome


def test_root_span_has_no_parent_and_negative_duration_is_zero() -> None:
    span = Span(trace_id=TRACE, span_id=SPAN, start_time_unix_nano=T0 + 10, end_time_unix_nano=T0)
    [doc] = span_documents(spans_request(span))
    assert "parent" not in doc.source
    assert doc.source["span"]["duration"] == {"us": 0}
    assert doc.source["event"]["duration"] == 0


def test_span_without_service_name() -> None:
    [doc] = span_documents(spans_request(Span(trace_id=TRACE, span_id=SPAN), service=None))
    assert "service" not in doc.source  # absent, not ""


def test_span_events() -> None:
    span = Span(
        trace_id=TRACE,
        span_id=SPAN,
        events=[Span.Event(name="exception", time_unix_nano=T0 + 5, attributes=[kv("type", s("E"))])],
    )
    [doc] = span_documents(spans_request(span))
    assert doc.source["events"] == [
        {"name": "exception", "time": "2024-01-02T03:04:05.000000005Z", "attributes": {"type": "E"}}
    ]


def test_many_spans_many_resources() -> None:
    request = spans_request(
        Span(trace_id=TRACE, span_id=SPAN, name="one"), Span(trace_id=TRACE, span_id=PARENT)
    )
    request.resource_spans.extend(
        spans_request(Span(trace_id=TRACE, span_id=b"\x09" * 8), service="other").resource_spans
    )
    docs = span_documents(request)
    assert [(d.span_id, d.source["service"]["name"]) for d in docs] == [
        (SPAN.hex(), "checkout"),
        (PARENT.hex(), "checkout"),
        ("09" * 8, "other"),
    ]
    assert len({d.doc_id for d in docs}) == 3


# ---------------------------------------------------------------- logs


def logs_request(
    *records: LogRecord, scope: str = FILE_SCOPE, service: str | None = "checkout", agent: str = "agent-1"
) -> ExportLogsServiceRequest:
    resource = [kv(ATTR_AGENT_ID, s(agent))]
    if service is not None:
        resource.insert(0, kv("service.name", s(service)))
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=resource),
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=scope), log_records=records)],
            )
        ]
    )


def file_record(
    line: dict[str, Any] | str, *, rid: str = "agent-1:fp:0", parse_error: bool = False, **fields: Any
) -> LogRecord:
    attributes = [kv(ATTR_RECORD_ID, s(rid)), kv(ATTR_FILE_PATH, s("/var/log/app.log"))]
    if parse_error:
        attributes.append(kv(ATTR_PARSE_ERROR, AnyValue(bool_value=True)))
    body = line if isinstance(line, str) else orjson.dumps(line).decode()
    fields.setdefault("time_unix_nano", T0)
    return LogRecord(body=s(body), attributes=attributes, **fields)


def one_log(record: LogRecord, **kwargs: Any) -> LogDoc:
    [doc] = log_documents(logs_request(record, **kwargs), default_mapping())
    return doc


def test_file_log_document() -> None:
    line = {
        "@timestamp": "2024-01-02T03:04:05Z",
        "level": "INFO",
        "service": "checkout",
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "message": "order placed",
        "data": {"order": 7, "items": [1, 2]},
        "user": "u-1",
    }
    record = file_record(
        line, rid="agent-1:fp:4096", trace_id=TRACE, span_id=SPAN, severity_text="INFO", severity_number=9
    )
    doc = one_log(record)
    assert doc.doc_id == "agent-1:fp:4096"
    assert doc.timestamp_ns == T0
    assert (doc.trace_id, doc.span_id) == (TRACE.hex(), SPAN.hex())
    assert doc.source == {
        "@timestamp": "2024-01-02T03:04:05.000000000Z",
        "message": "order placed",
        "data": {"order": 7, "items": [1, 2], "user": "u-1"},
        "log": {"level": "info", "file": {"path": "/var/log/app.log"}},
        "event": {"severity": 9},
        "service": {"name": "checkout"},
        "resource": {"attributes": {"service.name": "checkout", ATTR_AGENT_ID: "agent-1"}},
        "tether": {
            "record_id": "agent-1:fp:4096",
            "agent_id": "agent-1",
            "parse_error": False,
            "truncated": False,
            "invalid_utf8": False,
        },
        "trace": {"id": TRACE.hex()},
        "span": {"id": SPAN.hex()},
    }


def test_file_log_without_data_object() -> None:
    doc = one_log(file_record({"msg": "hello", "level": "info", "ts": 1, "request_id": "r-9", "n": 3}))
    assert doc.source["message"] == "hello"
    assert doc.source["data"] == {"request_id": "r-9", "n": 3}
    assert "trace" not in doc.source and "span" not in doc.source


def test_file_log_with_only_routing_fields_has_no_data() -> None:
    doc = one_log(file_record({"message": "m", "level": "info", "@timestamp": "2024-01-02T03:04:05Z"}))
    assert doc.source["message"] == "m"
    assert "data" not in doc.source


def test_file_log_data_that_is_not_an_object() -> None:
    doc = one_log(file_record({"message": "m", "data": "just text", "extra": 1}))
    assert doc.source["data"] == {"data": "just text", "extra": 1}


def test_file_log_non_string_message_is_json() -> None:
    doc = one_log(file_record({"msg": {"a": 1}}))
    assert orjson.loads(doc.source["message"]) == {"a": 1}


def test_file_log_ecs_flat_routing_fields_are_not_repeated_in_data() -> None:
    line = {
        "@timestamp": "2024-01-02T03:04:05Z",
        "log.level": "warn",
        "trace.id": TRACE.hex(),
        "span.id": SPAN.hex(),
        "service.name": "checkout",
        "message": "m",
        "user": "u",
    }
    doc = one_log(file_record(line))
    assert doc.source["data"] == {"user": "u"}


def test_file_log_ecs_nested_routing_fields_are_not_repeated_in_data() -> None:
    line = {
        "@timestamp": "2024-01-02T03:04:05Z",
        "log": {"level": "warn"},
        "trace": {"id": TRACE.hex()},
        "span": {"id": SPAN.hex()},
        "service": {"name": "checkout"},
        "message": "m",
        "user": "u",
    }
    doc = one_log(file_record(line))
    # The same line written with flat keys gives data == {"user": "u"} (test above).
    assert doc.source["data"] == {"user": "u"}


def test_file_log_keeps_fields_that_only_share_a_prefix_with_a_routing_field() -> None:
    line = {"service": "checkout", "service.version": "1.4.2", "message.id": "m-1", "message": "m"}
    doc = one_log(file_record(line))
    assert doc.source["data"] == {"service.version": "1.4.2", "message.id": "m-1"}


def test_parse_error_record_keeps_the_raw_line() -> None:
    doc = one_log(file_record("not json {", parse_error=True), service=None)
    assert doc.source["message"] == "not json {"
    assert doc.source["tether"]["parse_error"] is True
    assert "data" not in doc.source
    assert "service" not in doc.source  # absent, not ""
    assert "attributes" not in doc.source  # the tether attributes are typed fields, not attributes


def test_timestamp_falls_back_to_observed_time() -> None:
    record = file_record({"message": "m"}, time_unix_nano=0, observed_time_unix_nano=T0 + 7)
    doc = one_log(record)
    assert doc.timestamp_ns == T0 + 7
    assert doc.source["@timestamp"] == "2024-01-02T03:04:05.000000007Z"


def otlp_record(body: AnyValue, **fields: Any) -> LogRecord:
    fields.setdefault("time_unix_nano", T0)
    return LogRecord(body=body, **fields)


def test_otlp_log_document() -> None:
    record = otlp_record(
        s('{"looks": "like json"}'),
        trace_id=TRACE,
        span_id=SPAN,
        severity_text="Error",
        severity_number=17,
        attributes=[kv("http.route", s("/x")), kv("n", AnyValue(int_value=3))],
    )
    doc = one_log(record, scope="io.opentelemetry.app")
    assert doc.source["message"] == '{"looks": "like json"}'  # not expanded: not from a file
    assert "data" not in doc.source
    assert doc.source["log"] == {"level": "error"}
    assert doc.source["attributes"] == {"http.route": "/x", "n": 3}
    assert doc.source["tether"] == {
        "agent_id": "agent-1",
        "parse_error": False,
        "truncated": False,
        "invalid_utf8": False,
    }
    assert doc.source["trace"] == {"id": TRACE.hex()}
    assert len(doc.doc_id) == 32
    int(doc.doc_id, 16)


def test_otlp_structured_body_is_json() -> None:
    body = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                kv("event", s("login")),
                kv("tags", AnyValue(array_value=ArrayValue(values=[s("a"), AnyValue(int_value=2)]))),
                kv("raw", AnyValue(bytes_value=b"\x01\xff")),
            ]
        )
    )
    doc = one_log(otlp_record(body), scope="app")
    assert orjson.loads(doc.source["message"]) == {"event": "login", "tags": ["a", 2], "raw": "01ff"}


def test_otlp_content_id_is_stable_and_content_sensitive() -> None:
    def request(body: str, service: str = "checkout") -> ExportLogsServiceRequest:
        return logs_request(otlp_record(s(body), severity_text="info"), scope="app", service=service)

    mapping = default_mapping()
    first = log_documents(request("hello"), mapping)[0].doc_id
    assert log_documents(request("hello"), mapping)[0].doc_id == first
    replayed = ExportLogsServiceRequest.FromString(request("hello").SerializeToString())
    assert log_documents(replayed, mapping)[0].doc_id == first
    assert log_documents(request("hello!"), mapping)[0].doc_id != first
    assert log_documents(request("hello", service="other"), mapping)[0].doc_id != first


def test_file_log_id_is_its_record_id_even_when_content_differs() -> None:
    a = one_log(file_record({"message": "a"}, rid="agent-1:fp:0"))
    b = one_log(file_record({"message": "b"}, rid="agent-1:fp:0"))
    assert a.doc_id == b.doc_id == "agent-1:fp:0"


# ---------------------------------------------------------------- the agent's layout and the old one

FINGERPRINT = "0123456789abcdef"
EDGE_LINES = (Path(__file__).resolve().parents[1] / "data" / "edge_lines.jsonl").read_bytes()


def offset_record(line: dict[str, Any] | str, *, offset: AnyValue | int = 4096, **fields: Any) -> LogRecord:
    """A file record as the agent writes it: its offset alone, the path and fingerprint on the scope."""
    value = offset if isinstance(offset, AnyValue) else AnyValue(int_value=offset)
    record = file_record(line, **fields)
    del record.attributes[:]
    record.attributes.append(kv(ATTR_RECORD_OFFSET, value))
    return record


def with_scope(request: ExportLogsServiceRequest, *attributes: KeyValue) -> ExportLogsServiceRequest:
    request.resource_logs[0].scope_logs[0].scope.attributes.extend(attributes)
    return request


FILE_SCOPE_ATTRIBUTES = (kv(ATTR_FILE_PATH, s("/var/log/app.log")), kv(ATTR_FILE_FINGERPRINT, s(FINGERPRINT)))


def test_file_log_document_of_the_agents_layout_is_the_old_layouts() -> None:
    line = {"@timestamp": "2024-01-02T03:04:05Z", "level": "INFO", "message": "order placed", "user": "u-1"}
    fields: dict[str, Any] = {
        "trace_id": TRACE,
        "span_id": SPAN,
        "severity_text": "INFO",
        "severity_number": 9,
    }
    new = log_documents(
        with_scope(logs_request(offset_record(line, offset=4096, **fields)), *FILE_SCOPE_ATTRIBUTES),
        default_mapping(),
    )
    old = log_documents(
        logs_request(file_record(line, rid=f"agent-1:{FINGERPRINT}:4096", **fields)), default_mapping()
    )
    assert new[0].doc_id == new[0].source["tether"]["record_id"] == f"agent-1:{FINGERPRINT}:4096"
    assert new[0].source["log"]["file"] == {"path": "/var/log/app.log"}
    assert "attributes" not in new[0].source  # the offset is no attribute of the document
    assert new == old
    assert orjson.dumps(new[0].source) == orjson.dumps(old[0].source)  # key order too


def _lines() -> bytes:
    traced = [
        orjson.dumps({"level": "warn", "trace_id": f"{n:032x}", "span_id": f"{n:016x}", "message": n, "n": n})
        for n in range(1, 40)
    ]
    return EDGE_LINES + b"\n".join(traced) + b"\n"


@pytest.mark.parametrize("max_line", [262_144, 64])
def test_both_layouts_of_the_same_lines_make_the_same_documents(max_line: int) -> None:
    """Records an older agent left in Kafka and the agent's own, for the same lines, are indexed
    alike: same ids (a replay across the upgrade overwrites, never duplicates), same everything."""
    data, mapping = _lines(), default_mapping()
    encoder = PythonChunkEncoder(agent_id="agent-7", partitions=4, mapping=mapping, max_line_bytes=max_line)
    chunk = encoder.encode(
        data, 4096, fingerprint=FINGERPRINT, path="/var/log/app.log", untraced_partition=0, observed_ns=T0
    )
    ids = []
    for value in chunk.records.values():
        request = ExportLogsServiceRequest.FromString(value)
        new, old = log_documents(request, mapping), log_documents(old_layout(request), mapping)
        assert new == old
        assert [orjson.dumps(d.source) for d in new] == [orjson.dumps(d.source) for d in old]
        for doc in new:
            prefix, _, offset = doc.doc_id.rpartition(":")
            assert prefix == f"agent-7:{FINGERPRINT}" and doc.source["tether"]["record_id"] == doc.doc_id
            assert int(offset) == 4096 or data[int(offset) - 4097] == ord("\n")
            assert doc.source["log"]["file"] == {"path": "/var/log/app.log"}
            assert "attributes" not in doc.source
            ids.append(doc.doc_id)
    assert len(ids) == len(set(ids)) == chunk.lines > 100


def offset(value: int | str | bool) -> KeyValue:
    if isinstance(value, bool):
        return kv(ATTR_RECORD_OFFSET, AnyValue(bool_value=value))
    if isinstance(value, str):
        return kv(ATTR_RECORD_OFFSET, s(value))
    return kv(ATTR_RECORD_OFFSET, AnyValue(int_value=value))


SCOPE_PATH, SCOPE_FINGERPRINT = kv(ATTR_FILE_PATH, s("/scope.log")), kv(ATTR_FILE_FINGERPRINT, s("f"))
OLD = [kv(ATTR_RECORD_ID, s("agent-1:fp:7")), kv(ATTR_FILE_PATH, s("/own.log"))]


@pytest.mark.parametrize(
    ("record_attributes", "scope_attributes", "doc_id", "path", "attributes", "options"),
    [
        pytest.param(
            [offset(0)],
            [SCOPE_PATH, SCOPE_FINGERPRINT],
            "agent-1:f:0",
            "/scope.log",
            None,
            {},
            id="first-line",
        ),
        pytest.param(
            [offset(2**40)],
            [SCOPE_FINGERPRINT, SCOPE_PATH],
            "agent-1:f:1099511627776",
            "/scope.log",
            None,
            {},
            id="big",
        ),
        # the old layout's own uid and path win over the scope's
        pytest.param(
            OLD, [SCOPE_PATH, SCOPE_FINGERPRINT], "agent-1:fp:7", "/own.log", None, {}, id="old-record"
        ),
        pytest.param(
            [OLD[0], offset(5)],
            [SCOPE_PATH, SCOPE_FINGERPRINT],
            "agent-1:fp:7",
            "/scope.log",
            None,
            {},
            id="uid-wins",
        ),
        pytest.param(
            [offset(5), kv(ATTR_FILE_PATH, AnyValue())],
            [SCOPE_PATH, SCOPE_FINGERPRINT],
            "agent-1:f:5",
            None,
            None,
            {},
            id="own-empty-path",
        ),
        pytest.param([offset(5)], [SCOPE_FINGERPRINT], "agent-1:f:5", None, None, {}, id="no-scope-path"),
        pytest.param(
            [offset(5)],
            [SCOPE_PATH, SCOPE_FINGERPRINT],
            ":f:5",
            "/scope.log",
            None,
            {"agent": ""},
            id="no-agent-id",
        ),
        # no id can be made of it: the offset stays an attribute, the id is a content hash
        pytest.param(
            [offset(5)], [SCOPE_PATH], None, "/scope.log", {ATTR_RECORD_OFFSET: 5}, {}, id="no-fingerprint"
        ),
        pytest.param(
            [offset(5)],
            [kv(ATTR_FILE_FINGERPRINT, AnyValue(int_value=3))],
            None,
            None,
            {ATTR_RECORD_OFFSET: 5},
            {},
            id="int-fingerprint",
        ),
        pytest.param(
            [offset("5")], [SCOPE_FINGERPRINT], None, None, {ATTR_RECORD_OFFSET: "5"}, {}, id="string-offset"
        ),
        pytest.param(
            [offset(True)], [SCOPE_FINGERPRINT], None, None, {ATTR_RECORD_OFFSET: True}, {}, id="bool-offset"
        ),
        # the file scope's attributes mean nothing in another scope
        pytest.param(
            [offset(5)],
            [SCOPE_PATH, SCOPE_FINGERPRINT],
            None,
            None,
            {ATTR_RECORD_OFFSET: 5},
            {"scope": "app"},
            id="otlp",
        ),
    ],
)
def test_file_record_ids_and_paths(
    record_attributes: list[KeyValue],
    scope_attributes: list[KeyValue],
    doc_id: str | None,
    path: str | None,
    attributes: dict[str, Any] | None,
    options: dict[str, Any],
) -> None:
    record = LogRecord(body=s("{}"), time_unix_nano=T0, attributes=record_attributes)
    [doc] = log_documents(with_scope(logs_request(record, **options), *scope_attributes), default_mapping())
    if doc_id is None:
        assert len(doc.doc_id) == 32 and "record_id" not in doc.source["tether"]  # a content hash
    else:
        assert doc.doc_id == doc.source["tether"]["record_id"] == doc_id
    assert doc.source.get("log", {}).get("file") == (None if path is None else {"path": path})
    assert doc.source.get("attributes") == attributes


# ---------------------------------------------------------------- file lines that are no JSON object

DEEP = '{"message":"deep","d":' + "[" * 300 + "]" * 300 + "}"  # orjson.dumps stops at 254 levels


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (s("{"), "not_json", "{"),
        (s(' {"a": 1} and more'), "not_json", ' {"a": 1} and more'),
        (s(DEEP), "too_deep", DEEP),
        (AnyValue(int_value=7), "not_a_string", "7"),
        (AnyValue(kvlist_value=KeyValueList(values=[kv("a", s("b"))])), "not_a_string", '{"a":"b"}'),
        (AnyValue(), "not_a_string", "null"),
    ],
    ids=["invalid", "trailing-text", "too-deep", "int-body", "kvlist-body", "no-body"],
)
def test_a_file_line_that_is_no_json_object_is_indexed_as_a_message(
    body: AnyValue, reason: str, message: str
) -> None:
    record = file_record("", trace_id=TRACE)
    record.body.CopyFrom(body)
    good = file_record({"message": "after", "n": 1}, rid="agent-1:fp:9")
    unparsed: Counter[str] = Counter()
    bad_doc, good_doc = log_documents(logs_request(record, good), default_mapping(), unparsed)
    assert bad_doc.source["message"] == message
    assert bad_doc.source["tether"]["parse_error"] is True
    assert bad_doc.source["tether"]["parse_error_reason"] == reason
    assert "data" not in bad_doc.source
    assert (bad_doc.doc_id, bad_doc.trace_id) == ("agent-1:fp:0", TRACE.hex())  # same id and trace as ever
    assert unparsed == {reason: 1}
    assert good_doc.source["data"] == {"n": 1} and "parse_error_reason" not in good_doc.source["tether"]
    # the sink can encode it (a line nested too deep failed the whole delivery)
    [(_, body_bytes)] = bulk_bodies([IndexRequest("tether-logs", "x", T0, bad_doc.source)], 10, 1 << 20)
    assert orjson.loads(body_bytes.split(b"\n")[1])["message"] == message


@pytest.mark.parametrize(
    "text", ["", "[1,2]", '"x"', "42", "plain text", "\tat com.example.Main.run(Main.java:12)"]
)
def test_a_file_line_that_does_not_start_as_an_object_is_plain_text(text: str) -> None:
    record = file_record("", trace_id=TRACE)
    record.body.CopyFrom(s(text))
    unparsed: Counter[str] = Counter()
    [doc] = log_documents(logs_request(record), default_mapping(), unparsed)
    assert doc.source["message"] == text
    assert doc.source["tether"]["parse_error"] is False
    assert "parse_error_reason" not in doc.source["tether"] and "data" not in doc.source
    assert not unparsed


def test_a_line_exactly_as_deep_as_the_limit_is_expanded() -> None:
    line = '{"message":"m","d":' + "[" * (JSON_MAX_DEPTH - 1) + "]" * (JSON_MAX_DEPTH - 1) + "}"
    doc = one_log(file_record(line))
    assert doc.source["message"] == "m" and "parse_error_reason" not in doc.source["tether"]
    [(_, body)] = bulk_bodies([IndexRequest("tether-logs", "x", T0, doc.source)], 10, 1 << 20)
    assert orjson.loads(body.split(b"\n")[1])["data"]["d"] == doc.source["data"]["d"]  # encodable
    deeper = '{"message":"m","d":' + "[" * JSON_MAX_DEPTH + "]" * JSON_MAX_DEPTH + "}"
    assert one_log(file_record(deeper)).source["tether"]["parse_error_reason"] == "too_deep"


def test_many_brackets_in_strings_are_not_depth() -> None:
    line = orjson.dumps({"message": "[" * 500 + "{" * 500, "data": {"a": ["[[[" * 200]}}).decode()
    doc = one_log(file_record(line))
    assert doc.source["message"] == "[" * 500 + "{" * 500
    assert doc.source["tether"]["parse_error"] is False
