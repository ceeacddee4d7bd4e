"""The OTLP/HTTP receiver in-process, in front of the real Kafka.

Sink, delivery and receiver are built here (no agent process); what the receiver accepted is read
back from the topics and decoded. Clients are the OpenTelemetry SDK's own OTLP/HTTP exporters
and hand-built requests (OTLP/JSON per the spec, and broken bodies of every kind).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import ssl
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import requests
from aiokafka import AIOKafkaConsumer
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry import context as otel_context
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind

from tether.agent.config import AgentConfig, KafkaSinkConfig, OtlpReceiverConfig, SpoolConfig, TlsConfig
from tether.agent.delivery import BackpressureError, Delivery
from tether.agent.metrics import AgentMetrics
from tether.agent.sinks.kafka import KafkaSink
from tether.agent.sources.otlp import RETRY_AFTER_SECONDS, Accepted, OtlpIngest, Transport
from tether.agent.sources.otlp_http import OtlpHttpServer, start_http_receiver
from tether.schemas.records import LOGS_SCHEMA, SCHEMA_HEADER, SPANS_SCHEMA
from tether.stack import Stack
from tether.stack.kafka import ensure_topics

pytestmark = pytest.mark.stack

PARTITIONS = 8
MAX_REQUEST_BYTES = 64 * 1024
TOKEN = "e2e-token-7f3a"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def _partition(trace_id: bytes) -> int:
    return int.from_bytes(trace_id[8:16], "big") % PARTITIONS


# ---------------------------------------------------------------------------------------------
# The pipeline: KafkaSink -> Delivery -> OtlpIngest -> OTLP/HTTP receiver; readers of the topics.


@dataclass
class Delivered:
    partition: int
    resource: ProtoResource
    scope: InstrumentationScope
    item: Any  # Span or LogRecord


class TopicReader:
    """Reads a topic from the start, for the whole module, decoding every record it sees."""

    def __init__(self, bootstrap: str, topic: str, schema: bytes) -> None:
        self.topic = topic
        self.schema = schema
        self.items: list[Delivered] = []
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def wait_for(self, done: Callable[[list[Delivered]], bool], within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while not done(self.items):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: expected records did not arrive within {within}s")
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self._decode(record)

    def _decode(self, record: Any) -> None:
        assert dict(record.headers)[SCHEMA_HEADER] == self.schema
        if self.schema == SPANS_SCHEMA:
            spans = ExportTraceServiceRequest.FromString(record.value)
            for rs in spans.resource_spans:
                for ss in rs.scope_spans:
                    self.items.extend(Delivered(record.partition, rs.resource, ss.scope, s) for s in ss.spans)
        else:
            logs = ExportLogsServiceRequest.FromString(record.value)
            for rl in logs.resource_logs:
                for sl in rl.scope_logs:
                    self.items.extend(
                        Delivered(record.partition, rl.resource, sl.scope, r) for r in sl.log_records
                    )

    async def wait_for_spans(self, span_ids: set[bytes]) -> dict[bytes, Delivered]:
        """The delivered spans with these ids (each exactly once, in its trace's partition)."""
        await self.wait_for(lambda items: span_ids <= {d.item.span_id for d in items})
        mine = [d for d in self.items if d.item.span_id in span_ids]
        counts = Counter(d.item.span_id for d in mine)
        assert all(n == 1 for n in counts.values()), f"duplicates: {counts.most_common(3)}"
        for d in mine:
            assert d.partition == _partition(d.item.trace_id), d
        return {d.item.span_id: d for d in mine}

    async def wait_for_logs(self, bodies: set[str]) -> dict[str, Delivered]:
        await self.wait_for(lambda items: bodies <= {d.item.body.string_value for d in items})
        mine = [d for d in self.items if d.item.body.string_value in bodies]
        counts = Counter(d.item.body.string_value for d in mine)
        assert all(n == 1 for n in counts.values()), f"duplicates: {counts.most_common(3)}"
        return {d.item.body.string_value: d for d in mine}


@dataclass
class Pipeline:
    bootstrap: str
    directory: Path
    metrics: AgentMetrics
    delivery: Delivery
    partitions: int
    server: OtlpHttpServer
    spans: TopicReader
    logs: TopicReader
    session: aiohttp.ClientSession
    servers: list[OtlpHttpServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def count(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(f"tether_agent_{name}_total", labels)
        return value or 0.0

    @asynccontextmanager
    async def receiver(
        self, ingest_type: type[OtlpIngest] = OtlpIngest, **otlp: Any
    ) -> AsyncIterator[OtlpHttpServer]:
        """Another receiver, with its own OTLP config, in front of the same delivery."""
        config = OtlpReceiverConfig(grpc_endpoint=None, http_endpoint="127.0.0.1:0", **otlp)
        ingest = ingest_type(config, self.delivery, self.partitions, self.metrics)
        server = await start_http_receiver("127.0.0.1:0", ingest)
        try:
            yield server
        finally:
            await server.stop()


@pytest_asyncio.fixture(scope="module")
async def pipeline(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pipeline]:
    run = f"http-{uuid.uuid4().hex[:10]}"
    directory = tmp_path_factory.mktemp("otlp-http")
    logs_topic, spans_topic = f"e2e.{run}.logs", f"e2e.{run}.spans"
    await ensure_topics(stack.kafka.bootstrap, [logs_topic, spans_topic], PARTITIONS)
    config = AgentConfig(
        agent_id=f"e2e-{run}",
        data_dir=directory,
        kafka=KafkaSinkConfig(
            bootstrap_servers=stack.kafka.bootstrap, logs_topic=logs_topic, spans_topic=spans_topic
        ),
        spool=SpoolConfig(fsync="never"),
        otlp=OtlpReceiverConfig(
            grpc_endpoint=None, http_endpoint="127.0.0.1:0", max_request_bytes=MAX_REQUEST_BYTES
        ),
    )
    assert config.otlp is not None and config.otlp.http_endpoint is not None
    metrics = AgentMetrics()
    sink = KafkaSink(config.kafka)
    await sink.start()
    assert sink.partitions == PARTITIONS
    delivery = Delivery(sink, config.spool, config.spool_directory, metrics)
    await delivery.start()
    ingest = OtlpIngest(config.otlp, delivery, sink.partitions, metrics)
    server = await start_http_receiver(config.otlp.http_endpoint, ingest)
    spans = TopicReader(stack.kafka.bootstrap, spans_topic, SPANS_SCHEMA)
    logs = TopicReader(stack.kafka.bootstrap, logs_topic, LOGS_SCHEMA)
    await spans.start()
    await logs.start()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        yield Pipeline(
            stack.kafka.bootstrap, directory, metrics, delivery, sink.partitions, server, spans, logs, session
        )
    finally:
        await session.close()
        await logs.stop()
        await spans.stop()
        await server.stop()
        await delivery.stop(5)
        await sink.stop()


# ---------------------------------------------------------------------------------------------
# Building requests.


def _ids() -> tuple[bytes, bytes]:
    return os.urandom(16), os.urandom(8)


def _span(name: str, trace_id: bytes | None = None) -> Span:
    new_trace, span_id = _ids()
    now = time.time_ns()
    return Span(
        trace_id=new_trace if trace_id is None else trace_id,
        span_id=span_id,
        name=name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=now - 1_000_000,
        end_time_unix_nano=now,
    )


def _traces_request(*spans: Span) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=ProtoResource(
                    attributes=[KeyValue(key="service.name", value=AnyValue(string_value="http-e2e"))]
                ),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="tether.e2e"), spans=spans)],
            )
        ]
    )


async def _post(
    pipeline: Pipeline,
    path: str,
    body: Any,
    content_type: str = PROTOBUF,
    *,
    url: str | None = None,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    async with pipeline.session.request(
        method, (url or pipeline.url) + path, data=body, headers=all_headers
    ) as response:
        return response.status, dict(response.headers), await response.read()


async def _assert_good_request_succeeds(pipeline: Pipeline) -> None:
    span = _span("still serving")
    status, headers, body = await _post(pipeline, "/v1/traces", _traces_request(span).SerializeToString())
    assert status == 200, body
    assert headers["Content-Type"].startswith(PROTOBUF)
    assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
    await pipeline.spans.wait_for_spans({span.span_id})


# ---------------------------------------------------------------------------------------------
# (a) the SDK's OTLP/HTTP span exporter, protobuf, with and without compression.


def _sdk_spans(run: str) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "http-e2e-sdk"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tether.e2e.http")
    for t in range(6):
        with tracer.start_as_current_span(f"{run} root {t}", kind=SpanKind.SERVER) as root:
            root.set_attribute("e2e.trace", t)
            for c in range(2):
                links = [Link(root.get_span_context(), {"why": "test"})] if c == 1 else None
                with tracer.start_as_current_span(f"{run} child {t}.{c}", links=links):
                    pass
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate])
async def test_sdk_span_exporter(pipeline: Pipeline, compression: Compression) -> None:
    run = f"sdk-{compression.value}-{uuid.uuid4().hex[:8]}"
    spans = _sdk_spans(run)
    exporter = OTLPSpanExporter(endpoint=f"{pipeline.url}/v1/traces", compression=compression, timeout=10)
    ok_before = pipeline.count("otlp_requests", signal="traces", protocol="http", outcome="ok")
    try:
        result = await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    assert result is SpanExportResult.SUCCESS
    assert pipeline.count("otlp_requests", signal="traces", protocol="http", outcome="ok") == ok_before + 1

    sent = {s.context.span_id.to_bytes(8, "big"): s for s in spans}
    delivered = await pipeline.spans.wait_for_spans(set(sent))
    assert len(delivered) == len(spans) == 18
    for span_id, span in sent.items():
        got = delivered[span_id]
        assert got.item.trace_id == span.context.trace_id.to_bytes(16, "big")
        assert got.item.name == span.name
        assert got.item.start_time_unix_nano == span.start_time
        assert got.item.end_time_unix_nano == span.end_time
        parent = span.parent.span_id.to_bytes(8, "big") if span.parent else b""
        assert got.item.parent_span_id == parent
        assert [(link.trace_id, link.span_id) for link in got.item.links] == [
            (link.context.trace_id.to_bytes(16, "big"), link.context.span_id.to_bytes(8, "big"))
            for link in span.links
        ]
        assert got.scope.name == "tether.e2e.http"
        resource = {kv.key: kv.value.string_value for kv in got.resource.attributes}
        assert resource["service.name"] == "http-e2e-sdk"
    # Spans of one trace share a partition (the check per span is in wait_for_spans).
    by_trace: dict[bytes, set[int]] = {}
    for got in delivered.values():
        by_trace.setdefault(got.item.trace_id, set()).add(got.partition)
    assert len(by_trace) == 6 and all(len(p) == 1 for p in by_trace.values())


# ---------------------------------------------------------------------------------------------
# (b) OTLP/JSON, hand-built per the spec: hex ids, lowerCamelCase (and snake_case), enum names.


async def test_json_traces(pipeline: Pipeline) -> None:
    run = f"json-{uuid.uuid4().hex[:8]}"
    t1, root_id = _ids()
    _, child_id = _ids()
    t2, other_id = _ids()
    now = time.time_ns()
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "json-scope", "version": "1.0"},
                        "spans": [
                            {
                                "traceId": t1.hex(),
                                "spanId": root_id.hex(),
                                "name": f"{run} root",
                                "kind": "SPAN_KIND_SERVER",
                                "startTimeUnixNano": str(now - 2_000_000),
                                "endTimeUnixNano": str(now),
                                "attributes": [
                                    {"key": "http.status_code", "value": {"intValue": "200"}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                ],
                                "status": {"code": "STATUS_CODE_OK"},
                                "aFieldFromTheFuture": {"ignored": True},
                            },
                            {
                                "traceId": t1.hex().upper(),
                                "spanId": child_id.hex(),
                                "parentSpanId": root_id.hex(),
                                "name": f"{run} child",
                                "kind": 3,
                                "startTimeUnixNano": now - 1_000_000,
                                "endTimeUnixNano": now,
                                "links": [{"traceId": t2.hex(), "spanId": other_id.hex()}],
                                "status": {"code": 2, "message": "boom"},
                                "events": [{"name": "retry", "timeUnixNano": str(now)}],
                            },
                        ],
                    }
                ],
            },
            {  # snake_case names are proto3 JSON too
                "resource": {"attributes": [{"key": "service.name", "value": {"string_value": "snake"}}]},
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": t2.hex(),
                                "span_id": other_id.hex(),
                                "parent_span_id": "",
                                "name": f"{run} snake",
                                "start_time_unix_nano": str(now),
                                "end_time_unix_nano": str(now),
                            }
                        ]
                    }
                ],
            },
        ]
    }
    status, headers, body = await _post(pipeline, "/v1/traces", json.dumps(document), JSON)
    assert status == 200, body
    assert headers["Content-Type"].startswith(JSON)
    assert json.loads(body) == {}

    delivered = await pipeline.spans.wait_for_spans({root_id, child_id, other_id})
    root, child, other = delivered[root_id].item, delivered[child_id].item, delivered[other_id].item
    assert (root.trace_id, root.name, root.kind) == (t1, f"{run} root", Span.SPAN_KIND_SERVER)
    assert root.start_time_unix_nano == now - 2_000_000 and root.end_time_unix_nano == now
    assert {kv.key: kv.value for kv in root.attributes} == {
        "http.status_code": AnyValue(int_value=200),
        "ok": AnyValue(bool_value=True),
    }
    assert root.status.code == 1
    assert delivered[root_id].scope.name == "json-scope"
    assert (child.trace_id, child.parent_span_id, child.kind) == (t1, root_id, Span.SPAN_KIND_CLIENT)
    assert [(link.trace_id, link.span_id) for link in child.links] == [(t2, other_id)]
    assert (child.status.code, child.status.message) == (2, "boom")
    assert [e.name for e in child.events] == ["retry"]
    assert (other.trace_id, other.name, other.parent_span_id) == (t2, f"{run} snake", b"")
    assert delivered[other_id].resource.attributes[0].value.string_value == "snake"


async def test_json_logs(pipeline: Pipeline) -> None:
    run = f"json-logs-{uuid.uuid4().hex[:8]}"
    trace_id, span_id = _ids()
    now = time.time_ns()
    document = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeLogs": [
                    {
                        "scope": {"name": "json-logger"},
                        "logRecords": [
                            {
                                "timeUnixNano": str(now),
                                "severityNumber": "SEVERITY_NUMBER_ERROR",
                                "severityText": "ERROR",
                                "body": {"stringValue": f"{run} traced"},
                                "traceId": trace_id.hex(),
                                "spanId": span_id.hex(),
                                "attributes": [{"key": "user", "value": {"stringValue": "u-42"}}],
                            },
                            {
                                "observedTimeUnixNano": now,
                                "severityNumber": 9,
                                "body": {"stringValue": f"{run} untraced"},
                            },
                        ],
                    }
                ],
            }
        ]
    }
    content_type = "application/json; charset=utf-8"  # parameters are allowed
    status, headers, body = await _post(pipeline, "/v1/logs", json.dumps(document), content_type)
    assert status == 200, body
    assert headers["Content-Type"].startswith(JSON)
    assert json.loads(body) == {}
    delivered = await pipeline.logs.wait_for_logs({f"{run} traced", f"{run} untraced"})
    traced, untraced = delivered[f"{run} traced"], delivered[f"{run} untraced"]
    assert (traced.item.trace_id, traced.item.span_id) == (trace_id, span_id)
    assert traced.partition == _partition(trace_id)
    assert traced.item.severity_number == 17 and traced.item.severity_text == "ERROR"
    assert traced.item.time_unix_nano == now
    assert traced.item.attributes[0].value.string_value == "u-42"
    assert traced.scope.name == "json-logger"
    assert untraced.item.trace_id == b"" and untraced.item.severity_number == 9


# ---------------------------------------------------------------------------------------------
# (c) the SDK's OTLP/HTTP log exporter behind a LoggerProvider.


def _sdk_logs(endpoint: str, run: str) -> dict[str, tuple[bytes, bytes]]:
    """Emit logs (traced and not); returns body -> (trace id, span id) as sent."""
    provider = LoggerProvider(resource=Resource.create({"service.name": "http-e2e-logs"}))
    provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, compression=Compression.Gzip, timeout=10))
    )
    logger = provider.get_logger("tether.e2e.http.logs")
    tracer = TracerProvider().get_tracer("tether.e2e.http.logs")
    sent: dict[str, tuple[bytes, bytes]] = {}
    for i in range(5):
        with tracer.start_as_current_span(f"operation {i}") as span:
            body = f"{run} traced {i}"
            logger.emit(
                body=body,
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                attributes={"i": i},
                context=otel_context.get_current(),
            )
            ctx = span.get_span_context()
            sent[body] = (ctx.trace_id.to_bytes(16, "big"), ctx.span_id.to_bytes(8, "big"))
    logger.emit(body=f"{run} untraced", severity_number=SeverityNumber.WARN, severity_text="WARN")
    sent[f"{run} untraced"] = (b"", b"")
    assert provider.force_flush(15_000)
    provider.shutdown()
    return sent


async def test_sdk_log_exporter(pipeline: Pipeline) -> None:
    run = f"sdk-logs-{uuid.uuid4().hex[:8]}"
    received = pipeline.count("otlp_received", signal="logs", protocol="http")
    sent = await asyncio.to_thread(_sdk_logs, f"{pipeline.url}/v1/logs", run)
    delivered = await pipeline.logs.wait_for_logs(set(sent))
    for body, (trace_id, span_id) in sent.items():
        got = delivered[body]
        assert (got.item.trace_id, got.item.span_id) == (trace_id, span_id)
        if trace_id:
            assert got.partition == _partition(trace_id)
        assert got.scope.name == "tether.e2e.http.logs"
        assert {kv.key: kv.value.string_value for kv in got.resource.attributes}["service.name"] == (
            "http-e2e-logs"
        )
    assert delivered[f"{run} traced 3"].item.attributes[0].value.int_value == 3
    assert delivered[f"{run} untraced"].item.severity_number == SeverityNumber.WARN.value
    assert pipeline.count("otlp_received", signal="logs", protocol="http") == received + len(sent)


# ---------------------------------------------------------------------------------------------
# (d) bad input: the documented status and body, the counter moves, and the receiver carries on.


def _gzip_bomb() -> bytes:
    return gzip.compress(bytes(20 * MAX_REQUEST_BYTES))  # ~1.3 MB of zeros in ~1.3 kB


def _number_id_json() -> bytes:
    # An id that is no string is no OTLP/JSON: a 400. Bad hex ids are judged per span, like the
    # same protobuf content (a partial success: tests/unit/test_agent_otlp_invalid_ids.py).
    span = {"traceId": 12, "spanId": "ab" * 8, "name": "bad"}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span, dict(span)]}]}]}).encode()


@dataclass(frozen=True)
class Bad:
    path: str
    body: bytes
    content_type: str
    status: int
    outcome: str
    message: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    chunked: bool = False
    rejected_items: int = 0

    @property
    def signal(self) -> str:
        return {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}.get(self.path, "other")


BAD_INPUTS = {
    "garbage protobuf": Bad(
        "/v1/traces", b"\x0a\xff\xff\xff\x0fgarbage", PROTOBUF, 400, "bad_request", "protobuf"
    ),
    "truncated protobuf": Bad(
        "/v1/logs",
        _traces_request(_span("x")).SerializeToString()[:-3],
        PROTOBUF,
        400,
        "bad_request",
        "protobuf",
    ),
    "malformed JSON": Bad("/v1/traces", b'{"resourceSpans": [', JSON, 400, "bad_request", "not valid JSON"),
    "JSON not an object": Bad("/v1/logs", b"[1, 2]", JSON, 400, "bad_request", "must be an object"),
    "JSON wrong field type": Bad(
        "/v1/traces", b'{"resourceSpans": {"x": 1}}', JSON, 400, "bad_request", "not a valid OTLP/JSON"
    ),
    "trace id not a string": Bad(
        "/v1/traces", _number_id_json(), JSON, 400, "bad_request", "invalid traceId 12", rejected_items=2
    ),
    "text/plain": Bad("/v1/traces", b"hello", "text/plain", 415, "unsupported_media_type", "Content-Type"),
    "no content type": Bad("/v1/logs", b"", "", 415, "unsupported_media_type", "Content-Type"),
    "body over max": Bad(
        "/v1/traces",
        bytes(MAX_REQUEST_BYTES + 1),
        PROTOBUF,
        413,
        "too_large",
        "the body (65537 bytes) is larger",
    ),
    "chunked body over max": Bad(
        "/v1/logs",
        bytes(MAX_REQUEST_BYTES + 1),
        JSON,
        413,
        "too_large",
        "the body is larger than the limit",
        chunked=True,
    ),
    "gzip bomb": Bad(
        "/v1/traces",
        _gzip_bomb(),
        PROTOBUF,
        413,
        "too_large",
        "decompressed body is larger",
        headers=(("Content-Encoding", "gzip"),),
    ),
    "bad gzip": Bad(
        "/v1/traces",
        b"this is not gzip",
        PROTOBUF,
        400,
        "bad_request",
        "not valid gzip",
        headers=(("Content-Encoding", "gzip"),),
    ),
    "truncated gzip": Bad(
        "/v1/logs",
        gzip.compress(b"{}" * 100)[:-12],
        JSON,
        400,
        "bad_request",
        "truncated",
        headers=(("Content-Encoding", "gzip"),),
    ),
    "unknown encoding": Bad(
        "/v1/traces",
        b"\x00",
        PROTOBUF,
        415,
        "unsupported_media_type",
        "Content-Encoding",
        headers=(("Content-Encoding", "br"),),
    ),
    "metrics": Bad("/v1/metrics", b"", PROTOBUF, 404, "not_found", "metrics are not accepted"),
    "unknown path": Bad("/v2/traces", b"", JSON, 404, "not_found", "no OTLP endpoint"),
    "GET": Bad("/v1/traces", b"", PROTOBUF, 405, "method_not_allowed", "POST", method="GET"),
    "PUT": Bad("/v1/logs", b"{}", JSON, 405, "method_not_allowed", "POST", method="PUT"),
}


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 8192):
        yield data[start : start + 8192]


def _decode_status(content_type: str, body: bytes) -> tuple[int, str]:
    if content_type.startswith(PROTOBUF):
        status = status_pb2.Status.FromString(body)
        return status.code, status.message
    assert content_type.startswith(JSON), content_type
    document = json.loads(body)
    return document.get("code", 0), document.get("message", "")


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
async def test_bad_input(pipeline: Pipeline, case: Bad) -> None:
    labels = {"signal": case.signal, "protocol": "http"}
    before = pipeline.count("otlp_requests", outcome=case.outcome, **labels)
    rejected_before = pipeline.count("otlp_rejected", reason=case.outcome, **labels)
    status, headers, body = await _post(
        pipeline,
        case.path,
        _chunks(case.body) if case.chunked else case.body,
        case.content_type,
        method=case.method,
        headers=dict(case.headers),
    )
    assert status == case.status, body
    expected_type = case.content_type if case.content_type in (PROTOBUF, JSON) else JSON
    assert headers["Content-Type"].startswith(expected_type)
    code, message = _decode_status(headers["Content-Type"], body)
    assert code != 0 and case.message in message, message
    assert pipeline.count("otlp_requests", outcome=case.outcome, **labels) == before + 1
    assert (
        pipeline.count("otlp_rejected", reason=case.outcome, **labels)
        == rejected_before + case.rejected_items
    )
    if status == 405:
        assert headers["Allow"] == "POST"
    if case.headers == (("Content-Encoding", "br"),):
        assert "gzip" in headers["Accept-Encoding"]
    await _assert_good_request_succeeds(pipeline)


async def test_bearer_token(pipeline: Pipeline) -> None:
    request = _traces_request(_span("authorized")).SerializeToString()
    async with pipeline.receiver(bearer_token=TOKEN) as secured:
        url = f"http://127.0.0.1:{secured.port}"
        before = pipeline.count("otlp_requests", signal="traces", protocol="http", outcome="unauthorized")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, response_headers, body = await _post(
                pipeline, "/v1/traces", request, url=url, headers=headers
            )
            assert status == 401, body
            assert response_headers["WWW-Authenticate"] == "Bearer"
            code, message = _decode_status(response_headers["Content-Type"], body)
            assert code == 16 and "bearer token" in message
        after = pipeline.count("otlp_requests", signal="traces", protocol="http", outcome="unauthorized")
        assert after == before + 3
        status, _, body = await _post(
            pipeline, "/v1/traces", request, url=url, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert status == 200, body


def _self_signed(directory: Path) -> TlsConfig:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return TlsConfig(cert_file=cert, key_file=key)


async def test_tls_with_sdk_exporter(pipeline: Pipeline, tmp_path: Path) -> None:
    tls = _self_signed(tmp_path)
    async with pipeline.receiver(tls=tls, bearer_token=TOKEN) as server:
        spans = _sdk_spans(f"tls-{uuid.uuid4().hex[:8]}")
        # requests lets REQUESTS_CA_BUNDLE (set on many hosts) override the session's `verify`,
        # that is the exporter's certificate_file, unless the session ignores the environment.
        session = requests.Session()
        session.trust_env = False
        exporter = OTLPSpanExporter(
            endpoint=f"https://127.0.0.1:{server.port}/v1/traces",
            certificate_file=str(tls.cert_file),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
            session=session,
        )
        try:
            result = await asyncio.to_thread(exporter.export, spans)
        finally:
            exporter.shutdown()  # type: ignore[no-untyped-call]
        assert result is SpanExportResult.SUCCESS
        await pipeline.spans.wait_for_spans({s.context.span_id.to_bytes(8, "big") for s in spans})
        # The port speaks TLS only; with the certificate trusted, a JSON request works too.
        context = ssl.create_default_context(cafile=str(tls.cert_file))
        async with pipeline.session.post(
            f"https://127.0.0.1:{server.port}/v1/logs",
            data=b"{}",
            headers={"Content-Type": JSON, "Authorization": f"Bearer {TOKEN}"},
            ssl=context,
        ) as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientError):
            async with pipeline.session.post(
                f"http://127.0.0.1:{server.port}/v1/logs", data=b"{}", headers={"Content-Type": JSON}
            ) as response:
                await response.read()


# ---------------------------------------------------------------------------------------------
# (e) partial success: spans without a valid trace id are rejected, the rest delivered.


async def test_partial_success_protobuf(pipeline: Pipeline) -> None:
    good = [_span("good 1"), _span("good 2")]
    bad = _span("zero trace id", trace_id=bytes(16))
    labels = {"signal": "traces", "protocol": "http"}
    rejected_before = pipeline.count("otlp_rejected", reason="invalid_trace_id", **labels)
    partial_before = pipeline.count("otlp_requests", outcome="partial", **labels)
    request = _traces_request(good[0], bad, good[1])
    status, headers, body = await _post(pipeline, "/v1/traces", request.SerializeToString())
    assert status == 200, body
    assert headers["Content-Type"].startswith(PROTOBUF)
    response = ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 1
    assert "trace_id" in response.partial_success.error_message
    delivered = await pipeline.spans.wait_for_spans({s.span_id for s in good})
    assert {d.item.name for d in delivered.values()} == {"good 1", "good 2"}
    assert not any(d.item.span_id == bad.span_id for d in pipeline.spans.items)
    assert pipeline.count("otlp_rejected", reason="invalid_trace_id", **labels) == rejected_before + 1
    assert pipeline.count("otlp_requests", outcome="partial", **labels) == partial_before + 1


async def test_partial_success_json(pipeline: Pipeline) -> None:
    good_trace, good_span = _ids()
    _, bad_span = _ids()
    spans = [
        {"traceId": "0" * 32, "spanId": bad_span.hex(), "name": "zero"},
        {"traceId": good_trace.hex(), "spanId": good_span.hex(), "name": "good"},
    ]
    document = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    status, _, body = await _post(pipeline, "/v1/traces", json.dumps(document).encode(), JSON)
    assert status == 200, body
    partial = json.loads(body)["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1 and "trace_id" in partial["errorMessage"]
    delivered = await pipeline.spans.wait_for_spans({good_span})
    assert delivered[good_span].item.trace_id == good_trace


# ---------------------------------------------------------------------------------------------
# Backpressure: ingest says the agent is at capacity -> 503 with Retry-After, exporters retry.


class _Saturated(OtlpIngest):
    async def logs(self, request: bytes, transport: Transport) -> Accepted:
        raise BackpressureError("agent is at capacity; retry later")


async def test_backpressure_is_503_with_retry_after(pipeline: Pipeline) -> None:
    async with pipeline.receiver(_Saturated) as server:
        request = ExportLogsServiceRequest()
        request.resource_logs.add().scope_logs.add().log_records.append(
            LogRecord(body=AnyValue(string_value="x"))
        )
        for content_type, body in ((PROTOBUF, request.SerializeToString()), (JSON, b"{}")):
            status, headers, response = await _post(
                pipeline, "/v1/logs", body, content_type, url=f"http://127.0.0.1:{server.port}"
            )
            assert status == 503
            assert headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
            assert headers["Content-Type"].startswith(content_type)
            code, message = _decode_status(headers["Content-Type"], response)
            assert code == 14 and "capacity" in message
