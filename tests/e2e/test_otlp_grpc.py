"""OTLP/gRPC on a real agent process: bad input is answered clearly and the agent keeps serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.e2e.agent_harness import AgentProcess, consume_all, span_ids
from tether.stack import Stack

pytestmark = pytest.mark.stack

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


async def test_grpc_bad_input_auth_and_partial_success(stack: Stack, tmp_path: Path) -> None:
    agent = AgentProcess(stack, tmp_path, otlp_options='bearer_token: "s3cret"')
    await agent.create_topics()
    agent.start()
    assert agent.get("/healthz") == (200, b'{"status": "ok"}')
    assert agent.get("/readyz") == (200, b'{"ready": true}')
    assert agent.get("/metrics")[1].startswith(b"# HELP")
    target = f"127.0.0.1:{agent.grpc_port}"
    auth = (("authorization", "Bearer s3cret"),)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            raw = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await raw(b"\xff\xfe this is not protobuf", metadata=auth, timeout=10)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "ExportTraceServiceRequest" in (bad.value.details() or "")

            stub = TraceServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
                await stub.Export(ExportTraceServiceRequest(), timeout=10)
            assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED

            metrics_call = channel.unary_unary(
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
                await metrics_call(b"", metadata=auth, timeout=10)
            assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED

            good, zero = (
                Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="good"),
                Span(trace_id=bytes(16), span_id=b"\x03" * 8, name="no trace"),
            )
            request = ExportTraceServiceRequest(
                resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[good, zero])])]
            )
            response = await stub.Export(request, metadata=auth, timeout=10)
            assert response.partial_success.rejected_spans == 1
            assert "trace_id" in response.partial_success.error_message

        # Still serving: the SDK's own exporter with the token gets its span through.
        exporter = OTLPSpanExporter(
            endpoint=target, insecure=True, headers={"authorization": "Bearer s3cret"}
        )
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("after bad input") as span:
            sent = span.get_span_context().span_id
        provider.shutdown()
        await asyncio.sleep(0.5)
        delivered = {
            int.from_bytes(s, "big")
            for s in span_ids(await consume_all(stack.kafka.bootstrap, agent.spans_topic, idle_seconds=1.5))
        }
        assert delivered == {sent, int.from_bytes(b"\x02" * 8, "big")}
        metrics = agent.metrics()
        assert metrics["tether_agent_otlp_rejected_total"] == 1
    finally:
        assert agent.stop() == 0, agent.tail()
