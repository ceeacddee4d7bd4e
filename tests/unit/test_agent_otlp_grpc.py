"""OTLP/gRPC status mapping in-process: each outcome's status code, details and counted outcome.

The real receiver, OtlpIngest and Delivery over a fake sink (tests/unit/otlp_receivers.py); the
agent process in front of Kafka is tested in tests/e2e/test_otlp_grpc.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.unit.agent_fakes import wait_until
from tests.unit.otlp_receivers import (
    MAX_REQUEST_BYTES,
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

TRACES_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def _count(otlp: Receivers, outcome: str, signal: str = "traces") -> float:
    return otlp.count("otlp_requests", signal=signal, protocol="grpc", outcome=outcome)


@pytest.mark.parametrize(
    "compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip], ids=["identity", "gzip"]
)
async def test_traces_are_delivered_and_answered_ok(otlp: Receivers, compression: grpc.Compression) -> None:
    async with grpc.aio.insecure_channel(otlp.grpc_target, compression=compression) as channel:
        response = await TraceServiceStub(channel).Export(traces_request(span("a"), span("b")), timeout=10)  # type: ignore[no-untyped-call]
    assert response == ExportTraceServiceResponse()
    delivered = delivered_spans(otlp.sink)
    assert set(delivered) == {"a", "b"}
    assert all(partition == partition_of(s.trace_id) for partition, s in delivered.values())
    assert otlp.count("otlp_received", signal="traces", protocol="grpc") == 2
    assert _count(otlp, "ok") == 1


async def test_logs_are_delivered_and_answered_ok(otlp: Receivers) -> None:
    async with grpc.aio.insecure_channel(otlp.grpc_target) as channel:
        response = await LogsServiceStub(channel).Export(logs_request("one", "two"), timeout=10)  # type: ignore[no-untyped-call]
    assert response == ExportLogsServiceResponse()
    assert sorted(delivered_log_bodies(otlp.sink)) == ["one", "two"]
    assert _count(otlp, "ok", signal="logs") == 1


async def test_spans_without_a_valid_trace_id_are_a_partial_success(otlp: Receivers) -> None:
    request = traces_request(span("good"), span("zero", trace_id=bytes(16)))
    async with grpc.aio.insecure_channel(otlp.grpc_target) as channel:
        response = await TraceServiceStub(channel).Export(request, timeout=10)  # type: ignore[no-untyped-call]
    assert response.partial_success.rejected_spans == 1
    assert "trace_id must be 16 bytes" in response.partial_success.error_message
    assert set(delivered_spans(otlp.sink)) == {"good"}
    assert _count(otlp, "partial") == 1
    assert otlp.count("otlp_rejected", signal="traces", protocol="grpc", reason="invalid_trace_id") == 1


async def test_a_body_that_is_not_protobuf_is_invalid_argument(otlp: Receivers) -> None:
    async with grpc.aio.insecure_channel(otlp.grpc_target) as channel:
        raw = channel.unary_unary(TRACES_EXPORT, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await raw(b"\xff\xfe this is not protobuf", timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ExportTraceServiceRequest" in (refused.value.details() or "")
    assert _count(otlp, "bad_request") == 1
    assert otlp.sink.attempts == 0


async def test_a_missing_or_wrong_bearer_token_is_unauthenticated(tmp_path: Path) -> None:
    async with receivers(tmp_path, bearer_token="s3cret") as otlp:
        async with grpc.aio.insecure_channel(otlp.grpc_target) as channel:
            stub = TraceServiceStub(channel)  # type: ignore[no-untyped-call]
            for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Export(traces_request(span("x")), metadata=metadata, timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "bearer token" in (refused.value.details() or "")
            assert _count(otlp, "unauthorized") == 3 and otlp.sink.attempts == 0
            await stub.Export(
                traces_request(span("authorized")), metadata=(("authorization", "Bearer s3cret"),), timeout=10
            )
        assert set(delivered_spans(otlp.sink)) == {"authorized"}


async def test_a_full_spool_is_resource_exhausted_with_retry_after(otlp: Receivers) -> None:
    await otlp.fill_the_spool()
    async with grpc.aio.insecure_channel(otlp.grpc_target) as channel:
        call = LogsServiceStub(channel).Export(logs_request("x"), timeout=10)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "capacity" in (refused.value.details() or "")
        assert ("retry-after", str(RETRY_AFTER_SECONDS)) in tuple(await call.initial_metadata())
    assert _count(otlp, "backpressure", signal="logs") == 1
    assert otlp.count("otlp_rejected", signal="logs", protocol="grpc", reason="backpressure") == 1


@pytest.mark.parametrize(
    "compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip], ids=["identity", "gzip"]
)
async def test_a_request_over_the_limit_is_resource_exhausted_and_counted(
    otlp: Receivers, compression: grpc.Compression
) -> None:
    # Zeros: gzip makes them small on the wire; the limit is on the decompressed size.
    async with grpc.aio.insecure_channel(otlp.grpc_target, compression=compression) as channel:
        raw = channel.unary_unary(TRACES_EXPORT, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await raw(bytes(MAX_REQUEST_BYTES + 1), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = refused.value.details() or ""
    assert f"limit of {MAX_REQUEST_BYTES} bytes" in details and "otlp.max_request_bytes" in details
    assert _count(otlp, "too_large") == 1
    assert otlp.sink.attempts == 0


@pytest.mark.parametrize(
    "compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip], ids=["identity", "gzip"]
)
async def test_requests_grpcio_refuses_are_counted_too(
    otlp: Receivers, compression: grpc.Compression
) -> None:
    # grpcio's own limit (twice ours) bounds the memory a request takes; it answers those over it
    # itself, and the handler counts them.
    async with grpc.aio.insecure_channel(otlp.grpc_target, compression=compression) as channel:
        raw = channel.unary_unary(TRACES_EXPORT, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await raw(bytes(2 * MAX_REQUEST_BYTES + 1), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await wait_until(lambda: _count(otlp, "too_large") == 1)
        # and the receiver goes on serving
        response = await TraceServiceStub(channel).Export(traces_request(span("after")), timeout=10)  # type: ignore[no-untyped-call]
    assert response == ExportTraceServiceResponse()
    assert set(delivered_spans(otlp.sink)) == {"after"}
    assert _count(otlp, "ok") == 1 and _count(otlp, "too_large") == 1


async def test_the_sdk_exporters_oversized_batch_is_counted(otlp: Receivers) -> None:
    """The OpenTelemetry SDK's gRPC exporter, sending a batch over grpcio's limit (which it may
    retry, RESOURCE_EXHAUSTED being retryable): every attempt is counted as too_large."""
    provider = TracerProvider(resource=Resource.create({"service.name": "big"}))
    exporter = OTLPSpanExporter(endpoint=otlp.grpc_target, insecure=True, timeout=3)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for index in range(8):
        with tracer.start_as_current_span(f"span-{index}") as current:
            current.set_attribute("payload", "x" * (MAX_REQUEST_BYTES // 3))
    spans = memory.get_finished_spans()
    result = await asyncio.to_thread(exporter.export, spans)
    assert result == SpanExportResult.FAILURE
    await wait_until(lambda: _count(otlp, "too_large") >= 1)
    assert otlp.sink.attempts == 0
    assert otlp.count("otlp_received", signal="traces", protocol="grpc") == 0
    ok = await asyncio.to_thread(exporter.export, spans[:1])  # a small batch goes through
    assert ok == SpanExportResult.SUCCESS and set(delivered_spans(otlp.sink)) == {"span-0"}
    exporter.shutdown()
    provider.shutdown()


async def test_a_call_with_two_request_messages_is_invalid_argument(otlp: Receivers) -> None:
    async with grpc.aio.insecure_channel(otlp.grpc_target) as channel:
        streaming = channel.stream_unary(TRACES_EXPORT, request_serializer=None, response_deserializer=None)
        body = traces_request(span("x")).SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await streaming(iter([body, body]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _count(otlp, "bad_request") == 1 and otlp.sink.attempts == 0


async def test_metrics_are_unimplemented(otlp: Receivers) -> None:
    async with grpc.aio.insecure_channel(otlp.grpc_target) as channel:
        raw = channel.unary_unary(METRICS_EXPORT, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await raw(b"", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
