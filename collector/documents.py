"""Turning Kafka record values (OTLP requests) into Elasticsearch documents with ECS field names."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tether import native
from tether.collector.message_templates import render_template
from tether.schemas.log_fields import LogFieldMapping, severity_name
from tether.schemas.records import (
    ATTR_AGENT_ID,
    ATTR_FILE_FINGERPRINT,
    ATTR_FILE_PATH,
    ATTR_INVALID_UTF8,
    ATTR_KEYS_MOVED,
    ATTR_LOG_IOSTREAM,
    ATTR_PARSE_ERROR,
    ATTR_RECORD_ID,
    ATTR_RECORD_OFFSET,
    ATTR_TRUNCATED,
    DOCUMENT_JSON_MAX_DEPTH,
    FILE_SCOPE,
    K8S_ATTRIBUTES,
    record_id,
)

# A file line nested deeper (objects and arrays, its own object counting 1) is indexed as a plain
# message: orjson.dumps, which encodes its document, stops at 254 levels. The native path leaves
# such lines to this one at the same depth (collector_docs.rs JSON_MAX_DEPTH).
JSON_MAX_DEPTH = DOCUMENT_JSON_MAX_DEPTH

SPAN_KINDS = {k: n.removeprefix("SPAN_KIND_").lower() for n, k in Span.SpanKind.items()}
STATUS_CODES = {k: n.removeprefix("STATUS_CODE_") for n, k in Status.StatusCode.items()}


@dataclass(slots=True)
class LogDoc:
    doc_id: str
    timestamp_ns: int
    trace_id: str  # hex, "" when absent
    span_id: str
    source: dict[str, Any]
    level: str  # log.level, for the trace summary (which may not find it in `source`, see `head`)
    # With the native path: every field correlation never changes, JSON-encoded as the start of
    # an object (`{"@timestamp":...,`, ending in a comma); `source` then holds only the fields
    # correlation changes ("service", "tether", and "span" of an untraced line: correlation
    # writes a traced line's) and the document is both together.
    head: bytes | None = None


class UnusableLineError(ValueError):
    """A file line the agent took for a JSON object that cannot be expanded (`reason` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class SpanDoc:
    doc_id: str
    timestamp_ns: int  # the span's start
    trace_id: str
    span_id: str
    source: dict[str, Any]
    # What correlation and the RED metrics read besides source["span"], typed: the native path's
    # `source` holds only "span" (its head holds parent, service and event).
    duration_ns: int
    parent_id: str  # hex, "" for a root span
    service: str  # the resource's service.name, "" when it has none
    # With the native path: every field but "span" and "tether" (which correlation extends),
    # JSON-encoded as the start of an object, as LogDoc.head.
    head: bytes | None = None


def any_value(value: AnyValue) -> Any:
    if value.string_value:  # by far the most common kind; skips the slower oneof lookup
        return value.string_value
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


def iso_timestamp(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return f"{_second(seconds)}.{fraction:09d}Z"


@lru_cache(maxsize=8192)
def _second(seconds: int) -> str:
    """The RFC 3339 text of a whole second; documents of a batch share a few seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def span_documents(request: ExportTraceServiceRequest) -> list[SpanDoc]:
    docs: list[SpanDoc] = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name", ""))
        k8s = kubernetes_fields(resource)
        for scope_spans in resource_spans.scope_spans:
            named = (("name", scope_spans.scope.name), ("version", scope_spans.scope.version))
            scope = {key: value for key, value in named if value}
            for span in scope_spans.spans:
                trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
                duration_ns = max(span.end_time_unix_nano - span.start_time_unix_nano, 0)
                status = STATUS_CODES.get(span.status.code, "UNSET")
                source: dict[str, Any] = {
                    "@timestamp": iso_timestamp(span.start_time_unix_nano),
                    "trace": {"id": trace_id},
                    "span": {
                        "id": span_id,
                        "name": span.name,
                        "kind": SPAN_KINDS.get(span.kind, "unspecified"),
                        "status": status,
                        "duration": {"us": duration_ns // 1000},
                    },
                    "event": {"duration": duration_ns, "outcome": _outcome(status)},
                    "scope": scope,
                    "attributes": attributes(span.attributes),
                    "resource": {"attributes": resource},
                }
                if service:
                    source["service"] = {"name": service}
                if k8s:
                    source["k8s"] = k8s
                if span.status.message:
                    source["span"]["status_message"] = span.status.message
                if not scope:
                    del source["scope"]
                if span.parent_span_id:
                    source["parent"] = {"id": span.parent_span_id.hex()}
                if span.events:
                    source["events"] = [
                        {
                            "name": e.name,
                            "time": iso_timestamp(e.time_unix_nano),
                            "attributes": attributes(e.attributes),
                        }
                        for e in span.events
                    ]
                docs.append(
                    SpanDoc(
                        f"{trace_id}-{span_id}",
                        span.start_time_unix_nano,
                        trace_id,
                        span_id,
                        source,
                        duration_ns,
                        source["parent"]["id"] if span.parent_span_id else "",
                        service,
                    )
                )
    return docs


def kubernetes_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource's Kubernetes attributes (k8s.pod.name, ...) as the nested `k8s` object of a
    document, so each is a keyword field of its own; {} when it has none. Non-scalar values are
    left to resource.attributes."""
    out: dict[str, Any] = {}
    for key in K8S_ATTRIBUTES:
        value = resource.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            _, entity, field_name = key.split(".")
            out.setdefault(entity, {})[field_name] = value
    return out


_OUTCOMES = {"OK": "success", "ERROR": "failure"}  # ECS event.outcome; any other status: "unknown"


def _outcome(status: str) -> str:
    return _OUTCOMES.get(status, "unknown")


def log_documents(
    request: ExportLogsServiceRequest, mapping: LogFieldMapping, unparsed: Counter[str] | None = None
) -> list[LogDoc]:
    """The documents of a request's log records. A file line not flagged as a parse error that is
    not a JSON object after all (not a string, not JSON, not an object, nested too deep) is indexed
    like one the agent flagged: its text as `message`, `tether.parse_error` true, and why in
    `tether.parse_error_reason`; `unparsed` counts them by reason.

    A file line's id and path: from its own `log.record.uid` and `log.file.path` (the old layout,
    still in Kafka from older agents), else rebuilt from the scope's fingerprint and path and its
    `log.file.record_offset`, to the very same document."""
    docs: list[LogDoc] = []
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        service = str(resource.get("service.name", ""))
        agent_id = str(resource.get(ATTR_AGENT_ID, ""))
        k8s = kubernetes_fields(resource)
        for scope_logs in resource_logs.scope_logs:
            from_file = scope_logs.scope.name == FILE_SCOPE
            scope = attributes(scope_logs.scope.attributes) if from_file else {}
            fingerprint = scope.get(ATTR_FILE_FINGERPRINT)
            for record in scope_logs.log_records:
                attrs = attributes(record.attributes)
                doc_record_id = str(attrs.pop(ATTR_RECORD_ID, ""))
                # type(), not isinstance: a bool is an int too
                if isinstance(fingerprint, str) and type(attrs.get(ATTR_RECORD_OFFSET)) is int:
                    offset = attrs.pop(ATTR_RECORD_OFFSET)
                    doc_record_id = doc_record_id or record_id(agent_id, fingerprint, offset)
                parse_error = bool(attrs.pop(ATTR_PARSE_ERROR, False))
                keys_moved = bool(attrs.pop(ATTR_KEYS_MOVED, False))
                file_path = attrs.pop(ATTR_FILE_PATH, scope.get(ATTR_FILE_PATH))
                trace_id, span_id = record.trace_id.hex(), record.span_id.hex()
                timestamp_ns = record.time_unix_nano or record.observed_time_unix_nano
                level = document_level(record.severity_number, record.severity_text)
                source: dict[str, Any] = {
                    "@timestamp": iso_timestamp(timestamp_ns),
                    "log": {"level": level} if level else {},
                    "event": {"severity": record.severity_number},
                    "resource": {"attributes": resource},
                    "tether": {
                        "record_id": doc_record_id,
                        "agent_id": agent_id,
                        "parse_error": parse_error,
                        "truncated": bool(attrs.pop(ATTR_TRUNCATED, False)),
                        "invalid_utf8": bool(attrs.pop(ATTR_INVALID_UTF8, False)),
                    },
                }
                if service:
                    source["service"] = {"name": service}
                if k8s:
                    source["k8s"] = k8s
                iostream = attrs.pop(ATTR_LOG_IOSTREAM, None)
                if isinstance(iostream, str):
                    source["log"]["iostream"] = iostream
                for empty in [key for key in ("record_id", "agent_id") if not source["tether"][key]]:
                    del source["tether"][empty]  # OTLP logs have neither
                if from_file and not parse_error and not _is_plain_text(record.body):
                    try:
                        if not record.body.HasField("string_value"):
                            raise UnusableLineError("not_a_string")
                        source.update(_expand_json_line(record.body.string_value, mapping, keys_moved))
                    except UnusableLineError as error:
                        source["message"] = _body_text(record.body)
                        source["tether"].update(parse_error=True, parse_error_reason=error.reason)
                        if unparsed is not None:
                            unparsed[error.reason] += 1
                else:
                    source["message"] = _body_text(record.body)
                if file_path is not None:
                    source["log"]["file"] = {"path": file_path}
                if not source["log"]:
                    del source["log"]
                if attrs:
                    source["attributes"] = attrs
                if trace_id:
                    source["trace"] = {"id": trace_id}
                if span_id:
                    source["span"] = {"id": span_id}
                doc_id = doc_record_id or _content_id(record.SerializeToString(), service)
                docs.append(LogDoc(doc_id, timestamp_ns, trace_id, span_id, source, level))
    return docs


def document_level(severity_number: int, severity_text: str) -> str:
    """log.level: the short name of the severity's range (trace, debug, info, warn, error, fatal),
    so `log.level:error` finds "ERROR", "Error", "err", 50 and Serilog's "Error" alike; the text as
    written, lowercased, when the severity is unspecified; "" when neither is there."""
    return severity_name(severity_number) or severity_text.lower()


def _is_plain_text(body: AnyValue) -> bool:
    """A line that does not start as a JSON object is plain text: its message, no parse error."""
    return body.HasField("string_value") and not body.string_value.lstrip(_JSON_SPACE).startswith("{")


_JSON_SPACE = " \t\r\n"


def _body_text(body: AnyValue) -> str:
    if body.HasField("string_value"):
        return body.string_value
    return orjson.dumps(any_value(body), default=str).decode()


def native_log_documents(value: bytes, mapping: LogFieldMapping) -> list[LogDoc] | None:
    """log_documents of a Kafka record value, built and mostly encoded in Rust; None when the
    request is not only log lines read from files (then log_documents is the way).

    Building each document as a tree of dicts and encoding it again was the larger part of the
    collector's CPU, which takes Elasticsearch's share on a shared machine. Same documents:
    tests/unit/test_collector_native_documents.py compares them with log_documents'.
    """
    if _file_log_documents is None:
        return None
    rows = _file_log_documents(value, native.field_mapping(mapping))
    if rows is None:
        return None
    return [LogDoc(*row) for row in rows]


def native_span_documents(value: bytes) -> list[SpanDoc] | None:
    """span_documents of a Kafka record value, built and mostly encoded in Rust; None when the
    request holds values the native path leaves to the reference (doubles, arrays, maps, bytes,
    merged or unknown fields). Same documents: tests/unit/test_collector_native_spans.py."""
    if _span_documents is None:
        return None
    rows = _span_documents(value)
    if rows is None:
        return None
    return [SpanDoc(*row) for row in rows]


_span_documents: Any = native.extension().span_documents if native.choose("span_documents").native else None
_file_log_documents: Any = (
    native.extension().file_log_documents if native.choose("log_documents").native else None
)


def _expand_json_line(line: str, mapping: LogFieldMapping, keys_moved: bool = False) -> dict[str, Any]:
    """message and the remaining payload of an original JSON line (its routing fields are typed);
    UnusableLineError when the line is not a JSON object of at most JSON_MAX_DEPTH levels.

    `keys_moved`: the agent took the routing keys out of the line already (agent/body_keys.py,
    only when these lookups would find the very keys it took), so none is looked up again."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise UnusableLineError("not_json") from None
    if not isinstance(record, dict):
        raise UnusableLineError("not_an_object")
    # Counting brackets (in C) rules out almost every line before the exact walk.
    if line.count("{") + line.count("[") > JSON_MAX_DEPTH and _depth(record) > JSON_MAX_DEPTH:
        raise UnusableLineError("too_deep")
    out: dict[str, Any] = {}
    used: list[str] = []
    key, message = mapping.lookup_message(record, mapping.message)
    if key is not None:
        used.append(key)
        out["message"] = message if isinstance(message, str) else orjson.dumps(message).decode()
    else:
        template = mapping.lookup(record, mapping.message_template, scalar=True)[1]
        if isinstance(template, str):
            out["message"] = render_template(template, record)
    routing = (mapping.timestamp, mapping.level, mapping.trace_id, mapping.span_id, mapping.service)
    for role in () if keys_moved else routing:
        found, _ = mapping.lookup(record, role, scalar=True)
        if found is not None:
            used.append(found)
    # Everything else is the payload: the `data` object itself plus any other top-level keys.
    rest = _without(record, used)
    data_key, payload = mapping.lookup(rest, mapping.data)
    data = dict(payload) if isinstance(payload, dict) else ({data_key: payload} if data_key else {})
    data.update((k, v) for k, v in rest.items() if k != data_key)
    if data:
        out["data"] = data
    return out


def _depth(value: Any) -> int:
    """How many objects and arrays `value` nests (1 for a flat one), counted up to JSON_MAX_DEPTH + 1."""
    deepest, level = 0, [value]
    while level and deepest <= JSON_MAX_DEPTH:
        deepest += 1
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
    return deepest


def _without(record: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """`record` less each path: a flat key ("log.level") or a nested one ({"log": {"level": ..}})."""
    out = dict(record)
    for path in paths:
        if path in out:
            del out[path]
        else:
            _remove_nested(out, path.split("."))
    return out


def _remove_nested(node: dict[str, Any], parts: list[str]) -> None:
    head, child = parts[0], node.get(parts[0])
    if len(parts) == 1:
        node.pop(head, None)
        return
    if not isinstance(child, dict):
        return
    node[head] = child = dict(child)  # copy: never mutate the parsed line's shared objects
    _remove_nested(child, parts[1:])
    if not child:
        del node[head]


def _content_id(serialized: bytes, service: str) -> str:
    return hashlib.blake2b(serialized + service.encode(), digest_size=16).hexdigest()
