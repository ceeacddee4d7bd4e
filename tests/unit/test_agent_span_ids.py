"""Spans without a valid span id (8 bytes, not all zero) are rejected at the agent, over every
receiver: the collector's span document id is trace id + span id, so such spans would overwrite
one another. The request is a partial success, the good spans next to them are delivered, and
the rejected ones are counted under their own reason.

The real receivers, OtlpIngest and Delivery over a fake sink (tests/unit/otlp_receivers.py).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from tests.unit.otlp_receivers import Receivers, delivered_spans, span, traces_request

BAD_SPAN_IDS = {"empty": b"", "short": b"\x01" * 7, "zero": bytes(8)}
SPAN_ID_RULE = "span_id must be 8 bytes and not all zero"
TRACE_ID_RULE = "trace_id must be 16 bytes and not all zero"


def _mixed() -> Any:
    """Good spans around spans with a bad span id (and valid trace ids)."""
    spans = [span("good-1")]
    for name, span_id in BAD_SPAN_IDS.items():
        bad = span(name)
        bad.span_id = span_id
        spans.append(bad)
    spans.append(span("good-2"))
    return traces_request(*spans)


def _assert_counted(otlp: Receivers, protocol: str, invalid_span_id: int, invalid_trace_id: int = 0) -> None:
    labels = {"signal": "traces", "protocol": protocol}
    assert otlp.count("otlp_rejected", reason="invalid_span_id", **labels) == invalid_span_id
    assert otlp.count("otlp_rejected", reason="invalid_trace_id", **labels) == invalid_trace_id
    assert otlp.count("otlp_requests", outcome="partial", **labels) == 1
    assert otlp.count("otlp_received", **labels) == 2


async def test_grpc_rejects_spans_without_a_valid_span_id(otlp: Receivers) -> None:
    async with grpc.aio.insecure_channel(otlp.grpc_target) as channel:
        response = await TraceServiceStub(channel).Export(_mixed(), timeout=10)  # type: ignore[no-untyped-call]
    assert response.partial_success.rejected_spans == 3
    assert response.partial_success.error_message == f"3 span(s) rejected: {SPAN_ID_RULE}"
    assert set(delivered_spans(otlp.sink)) == {"good-1", "good-2"}
    _assert_counted(otlp, "grpc", invalid_span_id=3)


async def _post(otlp: Receivers, body: bytes, content_type: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(otlp.url + "/v1/traces", data=body, headers={"Content-Type": content_type}) as response,
    ):
        return response.status, await response.read()


async def test_http_protobuf_rejects_spans_without_a_valid_span_id(otlp: Receivers) -> None:
    status, body = await _post(otlp, _mixed().SerializeToString(), "application/x-protobuf")
    assert status == 200, body
    partial = ExportTraceServiceResponse.FromString(body).partial_success
    assert partial.rejected_spans == 3
    assert partial.error_message == f"3 span(s) rejected: {SPAN_ID_RULE}"
    assert set(delivered_spans(otlp.sink)) == {"good-1", "good-2"}
    _assert_counted(otlp, "http", invalid_span_id=3)


def _json_ids(document: Any) -> None:
    """proto3 JSON (base64 ids) -> OTLP/JSON (hex ids)."""
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for item in scope_spans["spans"]:
                for key in ("traceId", "spanId"):
                    if key in item:
                        item[key] = base64.b64decode(item[key]).hex()


async def test_http_json_rejects_spans_without_a_valid_span_id(otlp: Receivers) -> None:
    """In OTLP/JSON an id of the wrong length is refused before the split (the whole request, a
    400); an empty, absent or all-zero span id reaches it."""
    request = _mixed()
    spans = request.resource_spans[0].scope_spans[0].spans
    del spans[2]  # the 7-byte one
    bad = span("no-trace-id")  # and both ids bad: counted as an invalid trace id
    bad.ClearField("trace_id")
    bad.span_id = bytes(8)
    spans.append(bad)
    document = json_format.MessageToDict(request)
    _json_ids(document)
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["spanId"] = ""  # "empty", given
    status, body = await _post(otlp, json.dumps(document).encode(), "application/json")
    assert status == 200, body
    partial = json_format.Parse(body, ExportTraceServiceResponse()).partial_success
    assert partial.rejected_spans == 3
    assert partial.error_message == (
        f"3 span(s) rejected: {TRACE_ID_RULE} (1 span(s)); {SPAN_ID_RULE} (2 span(s))"
    )
    assert set(delivered_spans(otlp.sink)) == {"good-1", "good-2"}
    _assert_counted(otlp, "http", invalid_span_id=2, invalid_trace_id=1)


async def test_a_log_records_span_id_stays_optional(otlp: Receivers) -> None:
    """Empty, short or all zero: a log record is never rejected for its span_id (a short one, no
    valid OTLP, is cleared with a warning: tests/unit/test_agent_otlp_invalid_ids.py)."""
    trace_id = b"\x01" * 16
    records = [LogRecord(trace_id=trace_id, span_id=span_id) for span_id in BAD_SPAN_IDS.values()]
    body = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    ).SerializeToString()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            otlp.url + "/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
        ) as response,
    ):
        assert response.status == 200
        partial = ExportLogsServiceResponse.FromString(await response.read()).partial_success
        assert partial.rejected_log_records == 0
    assert otlp.count("otlp_received", signal="logs", protocol="http") == 3
