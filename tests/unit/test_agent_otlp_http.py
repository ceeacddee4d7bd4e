"""OTLP/HTTP status mapping in-process: each outcome's status, headers, body and counted outcome.

The real receiver, OtlpIngest and Delivery over a fake sink (tests/unit/otlp_receivers.py); the
same receiver in front of Kafka, with the SDK's exporters and TLS, is in tests/e2e/test_otlp_http.py.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

# googleapis-common-protos ships .pyi stubs but no py.typed marker.
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.unit.agent_fakes import wait_until
from tests.unit.otlp_receivers import (
    MAX_REQUEST_BYTES,
    SPILL_AFTER_SECONDS,
    Receivers,
    delivered_log_bodies,
    delivered_spans,
    logs_request,
    partition_of,
    receivers,
    span,
    traces_request,
)
from tether.agent.sources.otlp import RETRY_AFTER_SECONDS

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def rpc_status(self) -> tuple[int, str]:
        """The google.rpc.Status of a failure, in either encoding."""
        if self.headers["Content-Type"].startswith(PROTOBUF):
            status = status_pb2.Status.FromString(self.body)
            return status.code, status.message
        assert self.headers["Content-Type"].startswith(JSON), self.headers
        document = json.loads(self.body)
        return document.get("code", 0), document.get("message", "")


async def post(
    url: str, path: str, body: Any, content_type: str = PROTOBUF, *, method: str = "POST", **headers: str
) -> Answer:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, url + path, data=body, headers={"Content-Type": content_type, **headers}
        ) as response,
    ):
        return Answer(response.status, dict(response.headers), await response.read())


# -- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate"])
async def test_protobuf_traces_are_delivered_and_answered_200(otlp: Receivers, encoding: str) -> None:
    spans = [span("a"), span("b"), span("c")]
    body = traces_request(*spans).SerializeToString()
    compressed = {"identity": body, "gzip": gzip.compress(body), "deflate": zlib.compress(body)}[encoding]
    answer = await post(otlp.url, "/v1/traces", compressed, **{"Content-Encoding": encoding})
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"].startswith(PROTOBUF)
    assert not ExportTraceServiceResponse.FromString(answer.body).HasField("partial_success")
    delivered = delivered_spans(otlp.sink)  # answered once acknowledged: nothing to wait for
    assert set(delivered) == {"a", "b", "c"}
    assert all(partition == partition_of(s.trace_id) for partition, s in delivered.values())
    assert otlp.count("otlp_received", signal="traces", protocol="http") == 3
    assert otlp.count("otlp_requests", signal="traces", protocol="http", outcome="ok") == 1


async def test_json_logs_are_delivered_and_answered_in_json(otlp: Receivers) -> None:
    trace_id = "0102030405060708090a0b0c0d0e0f10"
    record = {"traceId": trace_id, "spanId": "0102030405060708", "body": {"stringValue": "hello"}}
    document = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record, {"body": {"stringValue": "x"}}]}]}]}
    answer = await post(otlp.url, "/v1/logs", json.dumps(document).encode(), JSON)
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"].startswith(JSON)
    assert json.loads(answer.body) == {}
    assert sorted(delivered_log_bodies(otlp.sink)) == ["hello", "x"]
    assert otlp.count("otlp_received", signal="logs", protocol="http") == 2


async def test_protobuf_logs_are_answered_with_an_empty_response(otlp: Receivers) -> None:
    answer = await post(otlp.url, "/v1/logs", logs_request("one", "two").SerializeToString())
    assert answer.status == 200, answer.body
    assert ExportLogsServiceResponse.FromString(answer.body) == ExportLogsServiceResponse()
    assert sorted(delivered_log_bodies(otlp.sink)) == ["one", "two"]


async def test_the_answer_waits_until_the_data_is_durable(otlp: Receivers) -> None:
    otlp.sink.hang()  # never acknowledged: the request is answered once the batch is spooled
    started = time.monotonic()
    answer = await post(otlp.url, "/v1/logs", logs_request("slow").SerializeToString())
    assert answer.status == 200, answer.body
    assert time.monotonic() - started >= SPILL_AFTER_SECONDS
    assert len(otlp.delivery.spool) == 1 and otlp.sink.sent == []
    otlp.sink.resume()


# -- partial success ---------------------------------------------------------------------------


async def test_spans_without_a_valid_trace_id_are_a_partial_success(otlp: Receivers) -> None:
    request = traces_request(span("good"), span("zero", trace_id=bytes(16)), span("short", trace_id=b"x"))
    answer = await post(otlp.url, "/v1/traces", request.SerializeToString())
    assert answer.status == 200, answer.body
    partial = ExportTraceServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_spans == 2 and "trace_id must be 16 bytes" in partial.error_message
    assert set(delivered_spans(otlp.sink)) == {"good"}
    labels = {"signal": "traces", "protocol": "http"}
    assert otlp.count("otlp_rejected", reason="invalid_trace_id", **labels) == 2
    assert otlp.count("otlp_requests", outcome="partial", **labels) == 1
    assert otlp.count("otlp_received", **labels) == 1


async def test_a_json_partial_success_is_answered_in_json(otlp: Receivers) -> None:
    spans = [
        {"traceId": "0" * 32, "spanId": "01" * 8, "name": "zero"},
        {"traceId": "ab" * 16, "spanId": "02" * 8, "name": "good"},
    ]
    document = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    answer = await post(otlp.url, "/v1/traces", json.dumps(document).encode(), JSON)
    assert answer.status == 200, answer.body
    partial = json.loads(answer.body)["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "trace_id" in partial["errorMessage"]
    assert set(delivered_spans(otlp.sink)) == {"good"}


# -- refused -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    path: str
    body: bytes
    content_type: str
    status: int
    code: int
    outcome: str
    message: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    chunked: bool = False
    rejected_items: int = 0

    @property
    def signal(self) -> str:
        return {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}.get(self.path, "other")


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


# A bad hex id makes a partial success (test_agent_otlp_invalid_ids.py); an id that is no string
# is no OTLP/JSON.
_NUMBER_ID_SPAN = {"traceId": "ab" * 16, "spanId": "ab" * 8, "parentSpanId": 12, "name": "bad"}
_GZIP = (("Content-Encoding", "gzip"),)
_INVALID, _TOO_LARGE = code_pb2.INVALID_ARGUMENT, code_pb2.RESOURCE_EXHAUSTED

REFUSED = {
    "garbage protobuf": Refused(
        "/v1/traces", b"\x0a\xff\xff\xff\x0fgarbage", PROTOBUF, 400, _INVALID, "bad_request", "protobuf"
    ),
    "truncated protobuf": Refused(
        "/v1/logs",
        logs_request("x").SerializeToString()[:-3],
        PROTOBUF,
        400,
        _INVALID,
        "bad_request",
        "protobuf",
    ),
    "malformed JSON": Refused(
        "/v1/traces", b'{"resourceSpans": [', JSON, 400, _INVALID, "bad_request", "not valid JSON"
    ),
    "JSON not an object": Refused(
        "/v1/logs", b"[1, 2]", JSON, 400, _INVALID, "bad_request", "must be an object"
    ),
    "JSON of the wrong shape": Refused(
        "/v1/traces",
        b'{"resourceSpans": {"x": 1}}',
        JSON,
        400,
        _INVALID,
        "bad_request",
        "not a valid OTLP/JSON",
    ),
    "id not a string": Refused(
        "/v1/traces",
        _json({"resourceSpans": [{"scopeSpans": [{"spans": [_NUMBER_ID_SPAN, _NUMBER_ID_SPAN]}]}]}),
        JSON,
        400,
        _INVALID,
        "bad_request",
        "invalid parentSpanId 12: must be a hex string",
        rejected_items=2,
    ),
    "bad gzip": Refused(
        "/v1/traces", b"not gzip", PROTOBUF, 400, _INVALID, "bad_request", "not valid gzip", headers=_GZIP
    ),
    "truncated gzip": Refused(
        "/v1/logs",
        gzip.compress(b"{}" * 100)[:-12],
        JSON,
        400,
        _INVALID,
        "bad_request",
        "truncated",
        headers=_GZIP,
    ),
    "text/plain": Refused(
        "/v1/traces", b"hi", "text/plain", 415, _INVALID, "unsupported_media_type", "Content-Type"
    ),
    "unknown encoding": Refused(
        "/v1/traces",
        b"\x00",
        PROTOBUF,
        415,
        _INVALID,
        "unsupported_media_type",
        "Content-Encoding",
        headers=(("Content-Encoding", "br"),),
    ),
    "body over the limit": Refused(
        "/v1/traces",
        bytes(MAX_REQUEST_BYTES + 1),
        PROTOBUF,
        413,
        _TOO_LARGE,
        "too_large",
        "(65537 bytes) is larger",
    ),
    "chunked body over the limit": Refused(
        "/v1/logs",
        bytes(MAX_REQUEST_BYTES + 1),
        JSON,
        413,
        _TOO_LARGE,
        "too_large",
        "the body is larger",
        chunked=True,
    ),
    "gzip bomb": Refused(
        "/v1/traces",
        gzip.compress(bytes(20 * MAX_REQUEST_BYTES)),
        PROTOBUF,
        413,
        _TOO_LARGE,
        "too_large",
        "decompressed body is larger",
        headers=_GZIP,
    ),
    "metrics": Refused(
        "/v1/metrics", b"", PROTOBUF, 404, code_pb2.UNIMPLEMENTED, "not_found", "metrics are not"
    ),
    "unknown path": Refused(
        "/v2/traces", b"", JSON, 404, code_pb2.NOT_FOUND, "not_found", "no OTLP endpoint"
    ),
    "GET": Refused(
        "/v1/traces", b"", PROTOBUF, 405, code_pb2.UNIMPLEMENTED, "method_not_allowed", "POST", method="GET"
    ),
}


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 8192):
        yield data[start : start + 8192]


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
async def test_refused_requests(otlp: Receivers, case: Refused) -> None:
    answer = await post(
        otlp.url,
        case.path,
        _chunks(case.body) if case.chunked else case.body,
        case.content_type,
        method=case.method,
        **dict(case.headers),
    )
    assert answer.status == case.status, answer.body
    expected_type = case.content_type if case.content_type in (PROTOBUF, JSON) else JSON
    assert answer.headers["Content-Type"].startswith(expected_type)
    code, message = answer.rpc_status()
    assert code == case.code and case.message in message, message
    labels = {"signal": case.signal, "protocol": "http"}
    assert otlp.count("otlp_requests", outcome=case.outcome, **labels) == 1
    assert otlp.count("otlp_rejected", reason=case.outcome, **labels) == case.rejected_items
    assert otlp.sink.sent == [] and otlp.sink.attempts == 0
    if case.status == 405:
        assert answer.headers["Allow"] == "POST"
    if case.status == 415 and case.headers:
        assert answer.headers["Accept-Encoding"] == "gzip, deflate, identity"


async def test_a_missing_or_wrong_bearer_token_is_401(tmp_path: Path) -> None:
    request = traces_request(span("authorized")).SerializeToString()
    async with receivers(tmp_path, bearer_token="s3cret") as otlp:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            answer = await post(otlp.url, "/v1/traces", request, **headers)
            assert answer.status == 401, answer.body
            assert answer.headers["WWW-Authenticate"] == "Bearer"
            code, message = answer.rpc_status()
            assert code == code_pb2.UNAUTHENTICATED and "bearer token" in message
        labels = {"signal": "traces", "protocol": "http"}
        assert otlp.count("otlp_requests", outcome="unauthorized", **labels) == 3
        assert otlp.sink.attempts == 0
        answer = await post(otlp.url, "/v1/traces", request, Authorization="Bearer s3cret")
        assert answer.status == 200, answer.body
        assert set(delivered_spans(otlp.sink)) == {"authorized"}


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
async def test_a_full_spool_is_503_with_retry_after(otlp: Receivers, content_type: str) -> None:
    await otlp.fill_the_spool()
    if content_type == PROTOBUF:
        body = logs_request("x").SerializeToString()
    else:
        body = _json({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "x"}}]}]}]})
    answer = await post(otlp.url, "/v1/logs", body, content_type)
    assert answer.status == 503, answer.body
    assert answer.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert answer.headers["Content-Type"].startswith(content_type)
    code, message = answer.rpc_status()
    assert code == code_pb2.UNAVAILABLE and "capacity" in message
    labels = {"signal": "logs", "protocol": "http"}
    assert otlp.count("otlp_requests", outcome="backpressure", **labels) == 1  # counted once
    assert otlp.count("otlp_rejected", reason="backpressure", **labels) == 1
    assert otlp.count("otlp_received", **labels) == 0


async def test_an_unexpected_failure_is_500_and_the_receiver_keeps_serving(
    otlp: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(otlp.delivery, "submit", broken)
    answer = await post(otlp.url, "/v1/logs", logs_request("x").SerializeToString())
    assert answer.status == 500
    code, message = answer.rpc_status()
    assert code == code_pb2.INTERNAL and message == "internal error: RuntimeError"
    assert otlp.count("otlp_requests", signal="logs", protocol="http", outcome="error") == 1
    monkeypatch.undo()
    answer = await post(otlp.url, "/v1/logs", logs_request("y").SerializeToString())
    assert answer.status == 200


def _requests_counted(otlp: Receivers) -> float:
    return sum(
        sample.value
        for metric in otlp.metrics.registry.collect()
        if metric.name == "tether_agent_otlp_requests"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


PARSER_ERRORS = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "header without a colon": b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "over-long header": b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    "over-long request line": b"POST /v1/traces?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("raw", PARSER_ERRORS.values(), ids=PARSER_ERRORS.keys())
async def test_requests_the_http_parser_refuses_are_400_and_counted(otlp: Receivers, raw: bytes) -> None:
    # aiohttp answers these itself, before any handler.
    reader, writer = await asyncio.open_connection("127.0.0.1", otlp.http.port)
    try:
        writer.write(raw)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        await asyncio.wait_for(reader.read(), 10)  # aiohttp closes the connection after it
    finally:
        writer.close()
    assert status_line.split(b" ")[1] == b"400", status_line
    # The response is counted once it is written, just after the client may have read it.
    await wait_until(lambda: _requests_counted(otlp) > 0)
    assert otlp.count("otlp_requests", signal="other", protocol="http", outcome="bad_request") == 1
    assert _requests_counted(otlp) == 1
    assert otlp.sink.attempts == 0


async def test_requests_our_handler_answers_are_not_counted_twice(otlp: Receivers) -> None:
    assert (await post(otlp.url, "/v1/logs", logs_request("x").SerializeToString())).status == 200
    assert (await post(otlp.url, "/v1/traces", b"\xff not protobuf")).status == 400
    assert (await post(otlp.url, "/nowhere", b"")).status == 404
    await asyncio.sleep(0.1)  # the access logger runs after the response is written
    assert _requests_counted(otlp) == 3
    assert otlp.count("otlp_requests", signal="other", protocol="http", outcome="bad_request") == 0
