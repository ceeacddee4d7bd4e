"""The native log documents (tether_fastlog.file_log_documents) against the Python reference.

collector.documents.log_documents is the specification: for each generated request, the native
documents, enriched by the same TraceBuffer and encoded by the sink into the bulk body, must parse
to exactly the reference's documents (types included: 1 and 1.0 differ), with no key twice at any
level (Elasticsearch refuses such documents; orjson would hide it by keeping the last value).
Requests the native path leaves to the reference must return None, never a different document.
File records are built in the old layout (`log.record.uid`, `log.file.path` per record) and
compared again in the agent's (the path and fingerprint on the scope, the offset per record),
which must give the very same documents.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import tether_fastlog
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.unit.file_layouts import new_layout
from tether.collector.correlate import Budget, Output, Stats, TraceBuffer
from tether.collector.documents import (
    JSON_MAX_DEPTH,
    LogDoc,
    any_value,
    kubernetes_fields,
    log_documents,
    native_log_documents,
    span_documents,
)
from tether.collector.sinks.bulk import bulk_bodies
from tether.collector.sinks.elasticsearch import Rejection
from tether.schemas.log_fields import LogFieldMapping, default_mapping
from tether.schemas.records import (
    ATTR_AGENT_ID,
    ATTR_FILE_FINGERPRINT,
    ATTR_FILE_PATH,
    ATTR_INVALID_UTF8,
    ATTR_PARSE_ERROR,
    ATTR_RECORD_ID,
    ATTR_RECORD_OFFSET,
    ATTR_TRUNCATED,
    FILE_SCOPE,
)

T0 = 1_704_164_645_123_456_789
DEFAULT = default_mapping()
CUSTOM = LogFieldMapping(
    timestamp=("when", "meta.time"),
    level=("sev", "meta.level", "level"),
    message=("text", "event.msg", "message"),
    trace_id=("tid", "ctx.trace"),
    span_id=("sid", "ctx.span"),
    service=("svc", "meta.svc.name"),
    data=("payload", "ctx.data"),
    severity={"info": 9},
)
assert hasattr(tether_fastlog, "file_log_documents"), "rebuild: pip install ./native/fastlog"


def s(value: str) -> AnyValue:
    return AnyValue(string_value=value)


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


# ---------------------------------------------------------------- the comparison


def no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"a key twice in one object: {keys}"
    return dict(pairs)


def canonical(document: bytes) -> bytes:
    """The parsed value, comparable exactly: key order aside, 1 and 1.0 (equal in Python) differ."""
    json.loads(document, object_pairs_hook=no_repeated_keys)
    return orjson.dumps(orjson.loads(document), option=orjson.OPT_SORT_KEYS)


def indexed(docs: list[LogDoc], spans: ExportTraceServiceRequest | None) -> list[tuple[Any, ...]]:
    """What Elasticsearch receives for these logs: enriched by a TraceBuffer (after the spans, if
    any), then encoded by the sink's bulk bodies; (alias, id, timestamp, canonical source)."""
    buffer = TraceBuffer(60.0, Budget(10**6, 10**12), 1000, Stats(), partition=0)
    outputs: list[Output] = []
    for span in span_documents(spans) if spans is not None else []:
        outputs += buffer.add_span(span, 0, 10, 0.0)
    for i, doc in enumerate(docs):
        outputs += buffer.add_log(doc, i, 10, 0.0)
    outputs += buffer.due(0.0, everything=True)
    out: list[tuple[Any, ...]] = []
    for part, body in bulk_bodies(outputs, 10**6, 10**12):
        lines = body.split(b"\n")[:-1]
        for request, source in zip(part, lines[1::2], strict=True):
            out.append((request.alias, request.doc_id, request.timestamp_ns, canonical(source)))
    return out


def compare(
    request: ExportLogsServiceRequest,
    mapping: LogFieldMapping = DEFAULT,
    spans: ExportTraceServiceRequest | None = None,
    *,
    agents_layout_too: bool = True,
) -> list[LogDoc] | None:
    """The native documents of `request` (None when it leaves them to the reference), after
    checking that they are the reference's; and, with `agents_layout_too`, that the same records
    in the agent's layout give the same documents, natively whenever the old layout's were."""
    native = compare_one(request, mapping, spans)
    if agents_layout_too:
        converted, count = new_layout(request)
        assert count > 0, "no record in the old layout to convert"
        assert (compare_one(converted, mapping, spans) is None) == (native is None)
        old = log_documents(ExportLogsServiceRequest.FromString(request.SerializeToString()), mapping)
        assert indexed(log_documents(converted, mapping), spans) == indexed(old, spans)
    return native


def compare_one(
    request: ExportLogsServiceRequest, mapping: LogFieldMapping, spans: ExportTraceServiceRequest | None
) -> list[LogDoc] | None:
    value = request.SerializeToString()
    native = native_log_documents(value, mapping)
    if native is None:
        return None
    reference = log_documents(ExportLogsServiceRequest.FromString(value), mapping)
    assert [(d.doc_id, d.timestamp_ns, d.trace_id, d.span_id, d.level) for d in native] == [
        (d.doc_id, d.timestamp_ns, d.trace_id, d.span_id, d.level) for d in reference
    ]
    for doc in native:
        # the fields correlation changes are in `source`, never also in `head`
        assert doc.head is not None and doc.head.endswith(b",")
        assert not set(orjson.loads(doc.head[:-1] + b"}")) & set(doc.source)
    assert indexed(native, spans) == indexed(reference, spans)
    return native


# ---------------------------------------------------------------- building requests


def record(
    line: str | bytes | dict[str, Any],
    *,
    rid: str = "agent-1:fp:0",
    path: str | None = "/var/log/app.log",
    trace: bytes = b"",
    span: bytes = b"",
    level: str = "INFO",
    flags: tuple[str, ...] = (),
    extra: list[KeyValue] | None = None,
    **fields: Any,
) -> LogRecord:
    body = line if isinstance(line, str) else line.decode() if isinstance(line, bytes) else json.dumps(line)
    attributes = [kv(ATTR_RECORD_ID, s(rid))] if rid is not None else []
    if path is not None:
        attributes.append(kv(ATTR_FILE_PATH, s(path)))
    attributes += [kv(flag, AnyValue(bool_value=True)) for flag in flags]
    attributes += extra or []
    fields.setdefault("time_unix_nano", T0)
    fields.setdefault("observed_time_unix_nano", T0 + 5)
    return LogRecord(
        body=s(body),
        attributes=attributes,
        trace_id=trace,
        span_id=span,
        severity_text=level,
        severity_number=fields.pop(
            "severity_number",
            SeverityNumber.SEVERITY_NUMBER_INFO if level else SeverityNumber.SEVERITY_NUMBER_UNSPECIFIED,
        ),
        **fields,
    )


def request(
    *records: LogRecord,
    service: str | None = "checkout",
    agent: str = "agent-1",
    scope: str = FILE_SCOPE,
    resource: list[KeyValue] | None = None,
) -> ExportLogsServiceRequest:
    attributes = [kv(ATTR_AGENT_ID, s(agent))] if resource is None else resource
    if service is not None and resource is None:
        attributes.insert(0, kv("service.name", s(service)))
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=attributes),
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=scope), log_records=records)],
            )
        ]
    )


def spans_for(trace: bytes, span_ids: list[bytes], service: str = "frontend") -> ExportTraceServiceRequest:
    spans = [
        Span(
            trace_id=trace,
            span_id=sid,
            parent_span_id=span_ids[0] if i else b"",
            name=f"op {i}",
            start_time_unix_nano=T0,
            end_time_unix_nano=T0 + 1000,
        )
        for i, sid in enumerate(span_ids)
    ]
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", s(service))]),
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )


# ---------------------------------------------------------------- lines, by hand


TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN = bytes.fromhex("b7ad6b7169203331")
PARENT = bytes.fromhex("00f067aa0ba902b7")

LINES: list[str] = [
    # the agent's default format
    '{"@timestamp":"2024-01-02T03:04:05Z","level":"INFO","service":"checkout","trace_id":"'
    + TRACE.hex()
    + '","span_id":"'
    + SPAN.hex()
    + '","message":"order placed","data":{"order":7,"items":[1,2]},"user":"u-1"}',
    '{"msg":"hello","level":"info","ts":1,"request_id":"r-9","n":3}',
    '{"message":"m","level":"info","@timestamp":"2024-01-02T03:04:05Z"}',
    '{"message":"m","data":"just text","extra":1}',
    '{"message":"m","data":{},"extra":{}}',
    '{"message":"m","data":{}}',
    '{"message":"m","data":null}',
    '{"message":"m","data":[1,{"a":2}]}',
    '{"message":"m","data":{"user":"in data","x":1},"user":"top wins","y":2}',
    # ECS, flat and nested
    '{"@timestamp":"t","log.level":"warn","trace.id":"x","span.id":"y","service.name":"s","message":"m","user":"u"}',
    '{"@timestamp":"t","log":{"level":"warn"},"trace":{"id":"x"},"span":{"id":"y"},"service":{"name":"s"},'
    '"message":"m","user":"u"}',
    '{"log":{"level":"warn","logger":"app.db"},"service":{"name":"s","version":"1.2"},"message":"m"}',
    '{"log":{"level":"warn","origin":{"file":{"line":3}}},"message":"m"}',
    '{"service":"checkout","service.version":"1.4.2","message.id":"m-1","message":"m"}',
    '{"level":{"nested":"object"},"log.level":"warn","message":"m"}',
    '{"level":["a"],"log":{"level":"warn"},"message":"m"}',
    '{"service":{"name":{"deeper":1}},"serviceName":"s","message":"m"}',
    # OpenTelemetry-style keys
    '{"timeUnixNano":"1704164645000000000","severityText":"ERROR","body":"boom","traceId":"'
    + TRACE.hex()
    + '","spanId":"'
    + SPAN.hex()
    + '","serviceName":"api","attributes":{"http.method":"GET","http.status_code":500}}',
    '{"time_unix_nano":1704164645000000000,"severity_text":"warn","log":"text in log",'
    '"traceid":"a","spanid":"b"}',
    # message forms
    '{"message":{"a":1}}',
    '{"message":[1,2]}',
    '{"message":42}',
    '{"message":-7}',
    '{"message":true}',
    '{"message":false}',
    '{"message":null}',
    '{"message":1.5}',
    '{"message":-0}',
    '{"message":""}',
    '{"no":"message at all"}',
    "{}",
    # repeated keys: a Python dict keeps the first position and the last value
    '{"message":"a","x":1,"message":"b"}',
    '{"a":1,"b":2,"a":3}',
    '{"data":{"k":1,"k":2},"data":{"j":3}}',
    '{"log":{"level":"warn"},"log":{"level":"error","x":1},"message":"m"}',
    '{"message":"m","o":{"p":{"q":1,"q":{"r":2}},"p":{"s":3}}}',
    '{"message":"m","data":{"x":1},"x":2,"x":3}',
    # unicode and escapes
    '{"message":"caf\\u00e9 \\ud83d\\ude00 \\"quoted\\" back\\\\slash \\/ \\b\\f\\n\\r\\t","k\\u00e9y":"v"}',
    '{"message":"raw é 😀 ☃","ключ":"значение"}',
    '{"\\u006cevel":"warn","m\\u0065ssage":"escaped keys","x":"\\u0000"}',
    '{"message":"m","a\\u0062":1,"ab":2}',
    '{"message":"line\\u2028sep"}',
    # numbers
    '{"message":"n","a":1e308,"b":-0,"c":-0.0,"d":1.5e-400,"e":18446744073709551615,'
    '"f":-9223372036854775808,"g":0.1,"h":1E+2,"i":1.0,"j":2.5e-3,"k":100000000000000000000.0}',
    '{"message":"n","big":9223372036854775807,"neg":-1,"zero":0,"exp":1e0,"frac":0.30000000000000004}',
    # whitespace
    '  { "message" : "spaced" , "data" : { "a" : [ 1 , 2 ] } , "x" : null }  ',
    '{"message":"tab\\tin","x":1}\t',
    # deep nesting
    '{"message":"deep","d":' + "[" * 150 + "]" * 150 + "}",
    '{"message":"deep","d":' + '{"a":' * 150 + "1" + "}" * 150 + "}",
    # many keys (the hash-map path for repeated keys)
    "{" + ",".join(f'"k{i}":{i}' for i in range(40)) + ',"k3":"again","message":"many"}',
    '{"message":"m","data":{'
    + ",".join(f'"d{i}":{i}' for i in range(30))
    + "},"
    + ",".join(f'"d{i}":"top"' for i in range(0, 40, 2))
    + "}",
]

# Plain text (not starting as a JSON object): a message, no parse error, on both paths.
LINES += ["", "[1,2]", '"a string"', "42", "null", '\ufeff{"a":1}', "plain text", "\tat x.Y.z(Y.java:1)"]
# Messages under other libraries' keys; a scalar wins over an object of an earlier name.
LINES += [
    '{"event":{"dataset":"x"},"message":"ecs"}',
    '{"event":"structlog","level":"info"}',
    '{"fields":{"message":"tracing","n":1},"level":"INFO"}',
    '{"record":{"message":"loguru","level":{"name":"INFO"}},"text":"x"}',
    '{"@m":"rendered","@mt":"ignored {X}","X":1}',
    '{"Message":"mel","State":{"Message":"mel"}}',
]

# Message templates (Serilog CLEF), rendered natively for strings, integers, true/false/null.
LINES += [
    '{"@t":"2024-01-02T03:04:05Z","@mt":"User {Id} in","Id":7}',
    '{"@mt":"{User} {User:l} {On} {None} {Gone} {{x}} {Id,5}|{Id,-5}|","User":"a \\"b\\" \\\\","On":false,'
    '"None":null,"Id":-12}',
    '{"@mt":"{A:0.0} and {B:l}","@r":["1.0","ignored"],"A":1,"B":"b"}',
    '{"@mt":"{A:x} {B:y}","@r":[5],"A":"a","B":"b"}',
    '{"@mt":"{X,99999999999999999999}|","X":"wide"}',
    '{"@mt":"caf\u00e9 {X,8}|","X":"\u00e9t\u00e9"}',
    '{"@mt":7,"X":1}',
    '{"@mt":"{X} {","X":"\u00e9"}',
]

# Lines the native path leaves to the reference (it would parse them differently, or not at all).
REFERENCE_LINES: list[str] = [
    '{"message":1,"big":123456789012345678901234567890}',  # orjson: a float
    '{"message":"m","x":-18446744073709551616}',
    '{"message":{"a":1}}',
    '{"message":[1]}',
    '{"message":1.5}',
    '{"message":-0}',
    '{"message":"deep","d":' + "[" * 250 + "]" * 250 + "}",
    # message templates with values the reference renders through orjson or by structure
    '{"@mt":"took {Ms} ms","Ms":1.5}',
    '{"@mt":"cart {Items}","Items":[1,2]}',
    '{"@mt":"at {@Point}","Point":{"X":1,"$type":"P"}}',
    "{",
    '{"a":1,}',
    '{"a":01}',
    '{"a":1e400}',
    '{"a":"\\ud800"}',
    '{"a":"\\udc00x"}',
    '{"a":"\\x"}',
    '{"a":NaN}',
    '{"a":1}x',
    '{"a":"tab\tinside"}',
]


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("mapping", [DEFAULT, CUSTOM], ids=["default", "custom"])
def test_line(line: str, mapping: LogFieldMapping) -> None:
    reference_only = {'{"message":{"a":1}}', '{"message":[1,2]}', '{"message":1.5}', '{"message":-0}'}
    docs = compare(request(record(line, trace=TRACE, span=SPAN)), mapping)
    if mapping is DEFAULT:
        assert (docs is None) == (line in reference_only)


@pytest.mark.parametrize("line", REFERENCE_LINES)
def test_line_left_to_the_reference(line: str) -> None:
    value = request(record(line)).SerializeToString()
    assert native_log_documents(value, DEFAULT) is None
    # ... which gives every one a document the sink can encode, a plain message if need be
    [doc] = log_documents(ExportLogsServiceRequest.FromString(value), DEFAULT)
    [(_, body)] = bulk_bodies([Output("tether-logs", doc.doc_id, T0, doc.source, None)], 10, 1 << 20)
    source = orjson.loads(body.split(b"\n")[1])
    assert source["tether"]["parse_error"] is ("parse_error_reason" in source["tether"])
    if source["tether"]["parse_error"]:
        assert source["message"] == line and "data" not in source


def test_both_paths_expand_a_line_up_to_the_same_depth() -> None:
    at_limit = '{"message":"m","d":' + "[" * (JSON_MAX_DEPTH - 1) + "]" * (JSON_MAX_DEPTH - 1) + "}"
    assert compare(request(record(at_limit))) is not None  # native, and the reference's documents
    deeper = '{"message":"m","d":' + "[" * JSON_MAX_DEPTH + "]" * JSON_MAX_DEPTH + "}"
    value = request(record(deeper)).SerializeToString()
    assert native_log_documents(value, DEFAULT) is None
    [doc] = log_documents(ExportLogsServiceRequest.FromString(value), DEFAULT)
    assert doc.source["tether"]["parse_error_reason"] == "too_deep"


# ---------------------------------------------------------------- records and requests


def test_correlation_by_span_trace_and_none() -> None:
    child = bytes.fromhex("1111111111111111")
    lines = ['{"message":"a","level":"info"}', '{"message":"b"}', '{"message":"c","service":"own"}']
    records = [
        record(lines[0], rid="agent-1:fp:0", trace=TRACE, span=child, level="Warn"),  # its span is known
        record(lines[1], rid="agent-1:fp:1", trace=TRACE, span=b"\x22" * 8),  # only its trace
        record(lines[2], rid="agent-1:fp:2", trace=TRACE),
        record(lines[0], rid="agent-1:fp:3", trace=b"\x33" * 16, span=SPAN),  # nothing known
        record(lines[1], rid="agent-1:fp:4"),  # untraced
    ]
    for service in ("checkout", None):
        docs = compare(request(*records, service=service), spans=spans_for(TRACE, [PARENT, child]))
        assert docs is not None and len(docs) == 5


@pytest.mark.parametrize(
    "options",
    [
        {"flags": (ATTR_TRUNCATED,)},
        {"flags": (ATTR_INVALID_UTF8, ATTR_TRUNCATED)},
        {"path": None},
        {"path": '/srv/\u00e9t\u00e9 "quoted"\\.log'},
        {"level": ""},
        {"level": "WARNING"},
        {"time_unix_nano": 0},
        {"time_unix_nano": 0, "observed_time_unix_nano": 0},
        {"time_unix_nano": 2**64 - 1},
        {
            "extra": [
                kv("host", s("h1")),
                kv("n", AnyValue(int_value=-3)),
                kv("ok", AnyValue(bool_value=True)),
            ]
        },
        {"extra": [kv("empty", AnyValue())]},
        {"extra": [kv(ATTR_RECORD_ID, s("agent-1:fp:99"))]},  # repeated: the last value
        {"extra": [kv(ATTR_FILE_PATH, AnyValue())]},  # a path without value: no log.file
        {"path": None, "extra": [kv(ATTR_FILE_PATH, AnyValue(int_value=1))]},
        {"extra": [kv(ATTR_TRUNCATED, AnyValue(bool_value=False))]},
        {"extra": [kv(ATTR_TRUNCATED, s("yes")), kv(ATTR_INVALID_UTF8, AnyValue(int_value=0))]},
        {"trace": b"\x01\x02"},  # odd lengths are hexed as they are
        {"span": b"\xff" * 8},
    ],
)
def test_record_fields(options: dict[str, Any]) -> None:
    line = '{"message":"m","level":"info","x":{"y":1}}'
    two_uids = any(kv.key == ATTR_RECORD_ID for kv in options.get("extra", []))
    assert compare(request(record(line, **options)), agents_layout_too=not two_uids) is not None


def offset(value: int) -> KeyValue:
    return kv(ATTR_RECORD_OFFSET, AnyValue(int_value=value))


FINGERPRINT, PATH = kv(ATTR_FILE_FINGERPRINT, s("f")), kv(ATTR_FILE_PATH, s("/scope.log"))


@pytest.mark.parametrize(
    ("record_attributes", "scope_attributes", "natively"),
    [
        ([offset(0)], [PATH, FINGERPRINT], True),
        ([offset(2**63 - 1)], [FINGERPRINT, PATH], True),
        ([offset(-1)], [PATH, FINGERPRINT], True),  # no agent writes it; str() of it all the same
        (
            [offset(7), kv(ATTR_PARSE_ERROR, AnyValue(bool_value=True)), kv("x", s("y"))],
            [PATH, FINGERPRINT],
            True,
        ),
        ([kv(ATTR_RECORD_ID, s("u:v:1")), offset(5)], [PATH, FINGERPRINT], True),  # the uid wins
        ([kv(ATTR_RECORD_ID, s("")), offset(5)], [PATH, FINGERPRINT], True),
        ([offset(5), kv(ATTR_FILE_PATH, s("/own.log"))], [PATH, FINGERPRINT], True),
        ([offset(5), kv(ATTR_FILE_PATH, AnyValue())], [PATH, FINGERPRINT], True),
        ([offset(5)], [FINGERPRINT], True),
        ([offset(5)], [kv(ATTR_FILE_PATH, AnyValue(int_value=1)), FINGERPRINT], True),
        ([offset(5)], [kv(ATTR_FILE_PATH, AnyValue()), FINGERPRINT], True),
        ([offset(5)], [kv(ATTR_FILE_FINGERPRINT, s("first")), PATH, FINGERPRINT], True),  # the last one
        ([offset(5)], [PATH, FINGERPRINT, kv("scope.other", AnyValue(int_value=1))], True),
        ([offset(5)], [FINGERPRINT, kv(ATTR_FILE_FINGERPRINT, s(""))], True),
        # no id can be made of these: a content hash, the reference's
        ([offset(5)], [PATH], False),
        ([offset(5)], [PATH, kv(ATTR_FILE_FINGERPRINT, AnyValue(int_value=1))], False),
        ([offset(5)], [PATH, kv(ATTR_FILE_FINGERPRINT, AnyValue())], False),
        ([kv(ATTR_RECORD_OFFSET, s("5"))], [PATH, FINGERPRINT], False),
        ([kv(ATTR_RECORD_OFFSET, AnyValue(bool_value=True))], [PATH, FINGERPRINT], False),
        ([kv(ATTR_RECORD_OFFSET, AnyValue())], [PATH, FINGERPRINT], False),
        ([kv(ATTR_RECORD_ID, AnyValue()), offset(5)], [PATH, FINGERPRINT], False),  # str(None)
        # scope attributes of kinds the native path does not read
        ([offset(5)], [PATH, FINGERPRINT, kv("d", AnyValue(double_value=1.5))], False),
    ],
)
def test_the_agents_layout(
    record_attributes: list[KeyValue], scope_attributes: list[KeyValue], natively: bool
) -> None:
    line = '{"message":"m","level":"info"}'
    for agent in ("agent-1", ""):
        value = request(LogRecord(body=s(line), time_unix_nano=T0, attributes=record_attributes), agent=agent)
        value.resource_logs[0].scope_logs[0].scope.attributes.extend(scope_attributes)
        docs = compare(value, agents_layout_too=False)
        assert (docs is not None) == natively


def test_both_layouts_in_one_request() -> None:
    """Old-layout records under a scope of the agent's layout, and scopes of either layout."""
    lines = ['{"message":"a"}', '{"message":"b","level":"warn"}']
    value = request(record(lines[0], rid="agent-1:fp:0", path=None), record(lines[1], rid="agent-1:old:9"))
    value.resource_logs[0].scope_logs[0].scope.attributes.extend([PATH, FINGERPRINT])
    value.resource_logs[0].scope_logs[0].log_records[0].attributes[0].CopyFrom(offset(3))
    value.resource_logs[0].scope_logs.extend(
        request(record(lines[1], rid="agent-1:x:1")).resource_logs[0].scope_logs
    )
    docs = compare(value, agents_layout_too=False)
    assert docs is not None
    assert [d.doc_id for d in docs] == ["agent-1:f:3", "agent-1:old:9", "agent-1:x:1"]
    assert [d.head is not None and b'"/scope.log"' in d.head for d in docs] == [True, False, False]


def test_parse_error_records_keep_the_raw_line() -> None:
    lines = ["not json {", '{"valid":"but flagged"}', 'caf\u00e9 \x01 "q"', ""]
    records = [record(line, rid=f"agent-1:fp:{i}", flags=(ATTR_PARSE_ERROR,)) for i, line in enumerate(lines)]
    docs = compare(request(*records))
    assert docs is not None and len(docs) == len(lines)


@pytest.mark.parametrize(
    "resource",
    [
        [
            kv("k8s.namespace.name", s("shop")),
            kv("k8s.pod.name", s("checkout-7d9f")),
            kv("k8s.pod.uid", s("0b1c")),
            kv("k8s.container.name", s("app")),
            kv("k8s.container.restart_count", AnyValue(int_value=2)),
        ],
        [kv("k8s.container.name", s("app")), kv("k8s.container.name", s("last wins"))],
        [kv("k8s.pod.uid", AnyValue(bool_value=True)), kv("k8s.pod.name", s("p"))],  # a bool is no uid
    ],
    ids=["all", "repeated", "bool"],
)
def test_kubernetes_resource_attributes_and_the_stream(resource: list[KeyValue]) -> None:
    line = record('{"message":"m"}', extra=[kv("log.iostream", s("stderr"))])
    docs = compare(request(line, resource=[kv(ATTR_AGENT_ID, s("agent-1")), *resource]))
    assert docs is not None
    source = {**orjson.loads(docs[0].head[:-1] + b"}"), **docs[0].source} if docs[0].head else docs[0].source
    assert source["log"]["iostream"] == "stderr" and "attributes" not in source
    assert source["k8s"] == kubernetes_fields({kv.key: any_value(kv.value) for kv in resource})
    assert source["k8s"]


def test_many_resources_and_services() -> None:
    value = request(record('{"message":"a"}', rid="agent-1:fp:0"), service="checkout")
    value.resource_logs.extend(
        request(record('{"message":"b"}', rid="agent-1:fp:1"), service=None).resource_logs
    )
    value.resource_logs.extend(
        request(
            record('{"message":"c"}', rid="agent-2:fp:2"),
            resource=[
                kv("service.name", s("payments")),
                kv(ATTR_AGENT_ID, s("agent-2")),
                kv("host", s("h")),
                kv("service.name", s("last wins")),
            ],
        ).resource_logs
    )
    value.resource_logs.add()  # an empty one
    docs = compare(value)
    assert docs is not None
    assert [d.source.get("service", {}).get("name") for d in docs] == ["checkout", None, "last wins"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: request(record('{"message":"m"}'), scope="io.opentelemetry.app"),  # OTLP logs
        lambda: request(record('{"message":"m"}', rid="")),  # content-hash ids
        lambda: request(LogRecord(body=AnyValue(int_value=3), attributes=[kv(ATTR_RECORD_ID, s("r"))])),
        # Python's str.lower()
        lambda: request(record('{"message":"m"}', level="Ünïcode", severity_number=0)),
        lambda: request(record('{"message":"m"}', extra=[kv("d", AnyValue(double_value=1.5))])),
        lambda: request(record('{"message":"m"}'), resource=[kv("service.name", AnyValue(int_value=1))]),
        lambda: request(record('{"message":"m"}'), resource=[kv("service.name", AnyValue())]),  # "None"
    ],
)
def test_requests_left_to_the_reference(make: Callable[[], ExportLogsServiceRequest]) -> None:
    assert native_log_documents(make().SerializeToString(), DEFAULT) is None


def test_undecodable_bytes_are_left_to_the_reference() -> None:
    value = request(record('{"message":"m"}')).SerializeToString()
    for broken in (
        value[:-3],
        value + b"\xff",
        b"\x0a\x05abc",
        value.replace(b"tether.file", b"tether.fil\xff"),
    ):
        assert native_log_documents(broken, DEFAULT) is None


def test_deadletter_original_is_the_whole_document() -> None:
    [doc] = compare(request(record('{"message":"m","x":1}', trace=TRACE, span=SPAN))) or []
    buffer = TraceBuffer(60.0, Budget(10, 10**9), 10, Stats(), partition=0)
    buffer.add_log(doc, 0, 10, 0.0)
    [output] = [o for o in buffer.due(0.0, everything=True) if o.alias == "tether-logs"]
    original = Rejection(output, 400, "bad").deadletter(T0).source["deadletter"]["original"]
    [reference] = log_documents(request(record('{"message":"m","x":1}', trace=TRACE, span=SPAN)), DEFAULT)
    reference.source["tether"]["correlation"] = "none"
    assert canonical(original.encode()) == canonical(orjson.dumps(reference.source))


# ---------------------------------------------------------------- generated


def random_line(rng: random.Random) -> str:
    keys = [
        "message",
        "msg",
        "level",
        "log.level",
        "service",
        "data",
        "trace_id",
        "span.id",
        "user",
        "k",
        "log",
        "trace",
        "span",
        "service.name",
        "body",
        "ts",
        "@timestamp",
        "x.y",
        "meta",
        "ctx",
        "é",
    ]

    def value(depth: int) -> Any:
        kind = rng.randrange(10 if depth < 3 else 6)
        if kind == 0:
            return rng.choice(["info", "WARN", "", 'a "q" \\ é 😀 \n', "0af7651916cd43dd8448eb211c80319c"])
        if kind == 1:
            return rng.choice([0, -1, 7, 2**63 - 1, -(2**63), 2**64 - 1])
        if kind == 2:
            return rng.choice([0.5, -0.0, 1e300, 1e-300, 3.14159])
        if kind == 3:
            return rng.choice([True, False, None])
        if kind in (4, 5):
            return "text"
        if kind in (6, 7, 8):
            return {
                rng.choice([*keys, "name", "id", "level", "data", "time", "msg"]): value(depth + 1)
                for _ in range(rng.randrange(4))
            }
        return [value(depth + 1) for _ in range(rng.randrange(3))]

    pairs = [(rng.choice(keys), value(0)) for _ in range(rng.randrange(8))]
    if rng.random() < 0.7:
        pairs.insert(0, ("message", "the message"))
    # written by hand so that repeated keys stay repeated
    return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"


def test_generated_requests() -> None:
    rng = random.Random(4)
    native = 0
    for n in range(300):
        records = []
        for i in range(rng.randrange(1, 8)):
            trace = rng.choice([b"", TRACE, b"\x44" * 16])
            span = rng.choice([b"", SPAN, PARENT]) if trace else rng.choice([b"", SPAN])
            flags = tuple(
                f for f in (ATTR_TRUNCATED, ATTR_INVALID_UTF8, ATTR_PARSE_ERROR) if rng.random() < 0.1
            )
            records.append(
                record(
                    random_line(rng),
                    rid=f"agent-1:fp:{n * 8 + i}",
                    trace=trace,
                    span=span,
                    flags=flags,
                    level=rng.choice(["INFO", "warn", ""]),
                    path=rng.choice(["/a.log", None]),
                )
            )
        mapping = rng.choice([DEFAULT, CUSTOM])
        docs = compare(
            request(*records, service=rng.choice(["checkout", None])),
            mapping,
            spans=spans_for(TRACE, [PARENT, SPAN]),
        )
        native += docs is not None
    assert native > 150  # the rest have a message that is an object, array or float: the reference's
