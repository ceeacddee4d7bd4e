"""Malformed trace and span ids (issue 12), through the real receivers, OtlpIngest and Delivery
over a fake sink (tests/unit/otlp_receivers.py).

- OTLP/JSON answers like protobuf for the same content: a span with a bad id is rejected (a
  partial success), its neighbours delivered; only a body that is no OTLP/JSON at all is a 400.
- A log record with a malformed id is kept without it, flagged and counted, so that every Kafka
  record is valid OTLP (the OpenTelemetry Collector's decoder refuses a whole request with one
  trace id of 15 bytes).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from tests.unit.otlp_receivers import (
    PARTITIONS,
    Receivers,
    delivered_spans,
    partition_of,
    span,
    traces_request,
)
from tether.schemas.records import ATTR_INVALID_SPAN_ID, ATTR_INVALID_TRACE_ID

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACE_ID = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
SPAN_ID = bytes.fromhex("0102030405060708")


async def _post(otlp: Receivers, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(otlp.url + path, data=body, headers={"Content-Type": content_type}) as response,
    ):
        return response.status, await response.read()


def _json_spans(spans: list[dict[str, Any]]) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


def _json_logs(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()


# -- spans: OTLP/JSON like protobuf ------------------------------------------------------------

# name -> (traceId, spanId) in OTLP/JSON, and the same content as protobuf bytes (None: not hex,
# which protobuf cannot spell)
BAD_SPANS: dict[str, tuple[str, str, tuple[bytes, bytes] | None]] = {
    "short trace id": ("ab" * 15, SPAN_ID.hex(), (b"\xab" * 15, SPAN_ID)),
    "long trace id": ("ab" * 17, SPAN_ID.hex(), (b"\xab" * 17, SPAN_ID)),
    "zero trace id": ("0" * 32, SPAN_ID.hex(), (bytes(16), SPAN_ID)),
    "trace id not hex": ("zz" * 16, SPAN_ID.hex(), None),
    "base64 trace id": ("AQIDBAUGBwgJCgsMDQ4PEA==", SPAN_ID.hex(), None),
    "short span id": (TRACE_ID.hex(), "ab" * 7, (TRACE_ID, b"\xab" * 7)),
    "zero span id": (TRACE_ID.hex(), "0" * 16, (TRACE_ID, bytes(8))),
    "span id not hex": (TRACE_ID.hex(), "xyz", None),
}


@pytest.mark.parametrize("name", list(BAD_SPANS))
async def test_a_json_span_with_a_bad_id_is_a_partial_success(otlp: Receivers, name: str) -> None:
    trace_id, span_id, _ = BAD_SPANS[name]
    spans = [
        {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "good-1"},
        {"traceId": trace_id, "spanId": span_id, "name": "bad"},
        {"traceId": "ff" * 16, "spanId": "02" * 8, "name": "good-2"},
    ]
    status, body = await _post(otlp, "/v1/traces", _json_spans(spans), JSON)
    assert status == 200, body
    partial = json_format.Parse(body, ExportTraceServiceResponse()).partial_success
    rule = "trace_id" if "trace" in name else "span_id"
    assert partial.rejected_spans == 1 and f"{rule} must be" in partial.error_message
    assert set(delivered_spans(otlp.sink)) == {"good-1", "good-2"}
    labels = {"signal": "traces", "protocol": "http"}
    assert otlp.count("otlp_rejected", reason=f"invalid_{rule}", **labels) == 1
    assert otlp.count("otlp_requests", outcome="partial", **labels) == 1
    assert otlp.count("otlp_received", **labels) == 2


async def test_json_and_protobuf_answer_alike_for_the_same_spans(otlp: Receivers) -> None:
    spans = [span("good")]
    for name, (_, _, ids) in BAD_SPANS.items():
        if ids is not None:
            bad = span(name)
            bad.trace_id, bad.span_id = ids
            spans.append(bad)
    request = traces_request(*spans)
    document = json_format.MessageToDict(request)
    for item in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:  # OTLP/JSON ids are hex
        for key in ("traceId", "spanId"):
            item[key] = base64.b64decode(item[key]).hex()
    json_status, json_body = await _post(otlp, "/v1/traces", json.dumps(document).encode(), JSON)
    json_sent = [(s.partition, s.value) for s in otlp.sink.sent]
    proto_status, proto_body = await _post(otlp, "/v1/traces", request.SerializeToString(), PROTOBUF)
    assert json_status == proto_status == 200
    from_json = json_format.Parse(json_body, ExportTraceServiceResponse())
    assert from_json == ExportTraceServiceResponse.FromString(proto_body)
    assert from_json.partial_success.rejected_spans == len(spans) - 1
    # the same Kafka records, byte for byte
    assert json_sent == [(s.partition, s.value) for s in otlp.sink.sent[len(json_sent) :]]


RELATED = "parent_span_id and a link's span_id must be empty or 8 bytes"
BAD_RELATED: dict[str, dict[str, Any]] = {
    "short parent span id": {"parentSpanId": "ab" * 7},
    "parent span id not hex": {"parentSpanId": "not hex"},
    "long link trace id": {"links": [{"traceId": "ab" * 17, "spanId": SPAN_ID.hex()}]},
    "base64 link trace id": {"links": [{"traceId": "AQIDBAUGBwgJCgsMDQ4PEA==", "spanId": SPAN_ID.hex()}]},
    "short link span id": {"links": [{"traceId": TRACE_ID.hex(), "spanId": "ab"}]},
}


@pytest.mark.parametrize("name", list(BAD_RELATED))
async def test_a_json_span_with_a_bad_parent_or_link_id_is_a_partial_success(
    otlp: Receivers, name: str
) -> None:
    spans = [
        {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "good"},
        {"traceId": TRACE_ID.hex(), "spanId": "02" * 8, "name": "bad", **BAD_RELATED[name]},
    ]
    status, body = await _post(otlp, "/v1/traces", _json_spans(spans), JSON)
    assert status == 200, body
    partial = json_format.Parse(body, ExportTraceServiceResponse()).partial_success
    assert partial.rejected_spans == 1 and RELATED in partial.error_message
    assert set(delivered_spans(otlp.sink)) == {"good"}
    labels = {"signal": "traces", "protocol": "http"}
    assert otlp.count("otlp_rejected", reason="invalid_parent_or_link_id", **labels) == 1


async def test_a_protobuf_span_with_a_bad_parent_id_is_a_partial_success(otlp: Receivers) -> None:
    bad = span("bad")
    bad.parent_span_id = b"\x01" * 7
    status, body = await _post(
        otlp, "/v1/traces", traces_request(span("good"), bad).SerializeToString(), PROTOBUF
    )
    assert status == 200, body
    partial = ExportTraceServiceResponse.FromString(body).partial_success
    assert partial.rejected_spans == 1 and RELATED in partial.error_message
    assert set(delivered_spans(otlp.sink)) == {"good"}


@pytest.mark.parametrize(
    "body",
    [b'{"resourceSpans": [', b'{"resourceSpans": {"x": 1}}', _json_spans([{"traceId": 12, "name": "x"}])],
    ids=["not JSON", "wrong shape", "id not a string"],
)
async def test_a_body_that_is_no_otlp_json_stays_a_400(otlp: Receivers, body: bytes) -> None:
    status, _ = await _post(otlp, "/v1/traces", body, JSON)
    assert status == 400
    assert otlp.sink.attempts == 0


# -- log records: kept without the malformed id, flagged ---------------------------------------


def _delivered_logs(otlp: Receivers) -> dict[str, tuple[int, LogRecord]]:
    """Record body -> (partition, record) of every record the sink acknowledged."""
    return {
        record.body.string_value: (sent.partition, record)
        for sent in otlp.sink.sent
        for resource_logs in ExportLogsServiceRequest.FromString(sent.value).resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    }


def _flags(record: LogRecord) -> dict[str, bool]:
    return {a.key: a.value.bool_value for a in record.attributes}


def _assert_logs_kept(otlp: Receivers, protocol: str) -> None:
    delivered = _delivered_logs(otlp)
    assert delivered.keys() == {"short-trace", "zero-trace", "short-span", "good"}
    for name in ("short-trace", "zero-trace"):
        _, record = delivered[name]
        assert (record.trace_id, record.span_id) == (b"", b"")
        assert _flags(record) == {ATTR_INVALID_TRACE_ID: True}
    partition, record = delivered["short-span"]
    assert (record.trace_id, record.span_id, partition) == (TRACE_ID, b"", partition_of(TRACE_ID))
    assert _flags(record) == {ATTR_INVALID_SPAN_ID: True}
    _, record = delivered["good"]
    assert (record.trace_id, record.span_id, _flags(record)) == (TRACE_ID, SPAN_ID, {})
    for _, record in delivered.values():  # what the OpenTelemetry Collector's decoder requires
        assert len(record.trace_id) in (0, 16) and len(record.span_id) in (0, 8)
    labels = {"signal": "logs", "protocol": protocol}
    assert otlp.count("otlp_invalid_ids", field="trace_id", **labels) == 2
    assert otlp.count("otlp_invalid_ids", field="span_id", **labels) == 1
    assert otlp.count("otlp_received", **labels) == 4
    assert otlp.count("otlp_requests", outcome="ok", **labels) == 1
    assert all(0 <= s.partition < PARTITIONS for s in otlp.sink.sent)


def _logs_request() -> ExportLogsServiceRequest:
    ids = {
        "short-trace": (b"\x01" * 15, SPAN_ID),
        "zero-trace": (bytes(16), b"\x01" * 3),
        "short-span": (TRACE_ID, b"\x01" * 7),
        "good": (TRACE_ID, SPAN_ID),
    }
    records = [
        LogRecord(trace_id=t, span_id=s, body=AnyValue(string_value=name)) for name, (t, s) in ids.items()
    ]
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])])


def _assert_warning(partial: Any) -> None:
    assert partial.rejected_log_records == 0
    assert "2 log record(s) kept without their trace_id and span_id" in partial.error_message
    assert "1 log record(s) kept without their span_id" in partial.error_message


async def test_protobuf_log_records_keep_going_without_malformed_ids(otlp: Receivers) -> None:
    status, body = await _post(otlp, "/v1/logs", _logs_request().SerializeToString(), PROTOBUF)
    assert status == 200, body
    _assert_warning(ExportLogsServiceResponse.FromString(body).partial_success)
    _assert_logs_kept(otlp, "http")


async def test_grpc_log_records_keep_going_without_malformed_ids(otlp: Receivers) -> None:
    async with grpc.aio.insecure_channel(otlp.grpc_target) as channel:
        response = await LogsServiceStub(channel).Export(_logs_request(), timeout=10)  # type: ignore[no-untyped-call]
    _assert_warning(response.partial_success)
    _assert_logs_kept(otlp, "grpc")


async def test_json_log_records_keep_going_without_malformed_ids(otlp: Receivers) -> None:
    records = [
        {"traceId": "01" * 15, "spanId": SPAN_ID.hex(), "body": {"stringValue": "short-trace"}},
        {"traceId": "0" * 32, "spanId": "010101", "body": {"stringValue": "zero-trace"}},
        {"traceId": TRACE_ID.hex(), "spanId": "01" * 7, "body": {"stringValue": "short-span"}},
        {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "body": {"stringValue": "good"}},
    ]
    status, body = await _post(otlp, "/v1/logs", _json_logs(records), JSON)
    assert status == 200, body
    _assert_warning(json_format.Parse(body, ExportLogsServiceResponse()).partial_success)
    _assert_logs_kept(otlp, "http")


async def test_a_json_log_id_that_is_not_hex_is_cleared_too(otlp: Receivers) -> None:
    records = [
        {"traceId": "AAECAwQFBgcICQoLDA0ODw==", "body": {"stringValue": "base64"}},
        {"traceId": TRACE_ID.hex(), "spanId": "not hex!", "body": {"stringValue": "span"}},
    ]
    status, body = await _post(otlp, "/v1/logs", _json_logs(records), JSON)
    assert status == 200, body
    delivered = _delivered_logs(otlp)
    assert _flags(delivered["base64"][1]) == {ATTR_INVALID_TRACE_ID: True}
    assert delivered["base64"][1].trace_id == b""
    assert _flags(delivered["span"][1]) == {ATTR_INVALID_SPAN_ID: True}
    assert (delivered["span"][1].trace_id, delivered["span"][1].span_id) == (TRACE_ID, b"")


async def test_log_records_with_good_ids_get_no_partial_success(otlp: Receivers) -> None:
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord(trace_id=TRACE_ID, span_id=SPAN_ID)])])
        ]
    )
    status, body = await _post(otlp, "/v1/logs", request.SerializeToString(), PROTOBUF)
    assert status == 200
    assert not ExportLogsServiceResponse.FromString(body).HasField("partial_success")
    assert otlp.count("otlp_invalid_ids", signal="logs", protocol="http", field="trace_id") == 0
