"""The Jaeger export's gRPC channel as configured, against a real local OTLP/gRPC server with TLS:
it trusts only the configured CA, checks the server's name, presents its client certificate,
sends the headers as metadata, and holds spans (retrying) while a refusal names the key to fix."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.unit.tls_certificates import Authority, Certificate, authority
from tether.collector.config import JaegerSinkConfig
from tether.collector.metrics import CollectorMetrics
from tether.collector.sinks.jaeger import JaegerSink

TOKEN = "jaeger-Token-abc123-secret"


@dataclass
class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """Accepts spans when the request carries `expected_token`; keeps each request's metadata."""

    expected_token: str | None = None
    received: list[dict[str, str]] = field(default_factory=list)

    async def Export(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.received.append(metadata)
        if self.expected_token and metadata.get("authorization") != f"Bearer {self.expected_token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        return trace_service_pb2.ExportTraceServiceResponse()


@asynccontextmanager
async def otlp_server(
    service: TraceService, certificate: Certificate, client_ca: Authority | None = None
) -> AsyncIterator[int]:
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    credentials = grpc.ssl_server_credentials(
        [(certificate.key_file.read_bytes(), certificate.cert_file.read_bytes())],
        root_certificates=None if client_ca is None else client_ca.ca_file.read_bytes(),
        require_client_auth=client_ca is not None,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


def one_span() -> trace_service_pb2.ExportTraceServiceRequest:
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="checkout")
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )


def sink(port: int, **settings: Any) -> JaegerSink:
    config = JaegerSinkConfig.model_validate(
        {"endpoint": f"127.0.0.1:{port}", "timeout_seconds": 2, **settings}
    )
    return JaegerSink(config, CollectorMetrics())


async def refusal(jaeger: JaegerSink, caplog: pytest.LogCaptureFixture) -> str:
    """The first explained refusal while the export keeps retrying (it must not give up)."""
    with caplog.at_level(logging.WARNING):
        exporting = asyncio.create_task(jaeger.export([one_span()]))
        try:
            for _ in range(600):
                records = [
                    r for r in caplog.records if r.getMessage() == "Jaeger refused the export; retrying"
                ]
                if records:
                    assert not jaeger.healthy  # the collector's /readyz says not ready
                    return str(records[0].error)  # type: ignore[attr-defined]
                assert not exporting.done(), "the export gave up instead of holding the spans"
                await asyncio.sleep(0.05)
            raise AssertionError("no refusal logged")
        finally:
            exporting.cancel()
            await jaeger.close()


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return authority(tmp_path / "ca")


async def test_trusted_ca_and_headers_as_metadata(ca: Authority) -> None:
    service = TraceService(expected_token=TOKEN)
    async with otlp_server(service, ca.issue("jaeger")) as port:
        jaeger = sink(port, tls={"ca_file": ca.ca_file}, bearer_token=TOKEN, headers={"x-scope-orgid": "t1"})
        await asyncio.wait_for(jaeger.export([one_span()]), 30)
        await jaeger.close()
    assert service.received[0]["authorization"] == f"Bearer {TOKEN}"
    assert service.received[0]["x-scope-orgid"] == "t1"


async def test_untrusted_ca_names_ca_file(
    tmp_path: Path, ca: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    other = authority(tmp_path / "other", "other CA")
    service = TraceService()
    async with otlp_server(service, ca.issue("jaeger")) as port:
        problem = await refusal(sink(port, tls={"ca_file": other.ca_file}, bearer_token=TOKEN), caplog)
    assert problem.startswith("jaeger.tls.ca_file: certificate verify failed"), problem
    assert service.received == []
    assert all(TOKEN not in str(r.__dict__) for r in caplog.records)


async def test_wrong_name_names_endpoint_and_server_name_fixes_it(
    ca: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    service = TraceService()
    async with otlp_server(service, ca.issue("jaeger", ("jaeger.internal",))) as port:
        problem = await refusal(sink(port, tls={"ca_file": ca.ca_file}), caplog)
        assert problem.startswith("jaeger.endpoint: certificate verify failed"), problem
        fixed = sink(port, tls={"ca_file": ca.ca_file, "server_name": "jaeger.internal"})
        await asyncio.wait_for(fixed.export([one_span()]), 30)
        await fixed.close()
    assert len(service.received) == 1


async def test_client_certificate(tmp_path: Path, ca: Authority) -> None:
    clients = authority(tmp_path / "clients", "client CA")
    client = clients.issue("collector", ("tether-collector",), client=True)
    service = TraceService()
    async with otlp_server(service, ca.issue("jaeger"), client_ca=clients) as port:
        tls = {"ca_file": ca.ca_file, "cert_file": client.cert_file, "key_file": client.key_file}
        jaeger = sink(port, tls=tls)
        await asyncio.wait_for(jaeger.export([one_span()]), 30)
        await jaeger.close()
    assert len(service.received) == 1


async def test_refused_token_names_bearer_token_and_holds_the_spans(
    ca: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    service = TraceService(expected_token="the-right-one")
    async with otlp_server(service, ca.issue("jaeger")) as port:
        problem = await refusal(sink(port, tls={"ca_file": ca.ca_file}, bearer_token=TOKEN), caplog)
    assert problem.startswith(
        "jaeger.bearer_token: the server refused our credentials (invalid bearer token)"
    )
    assert TOKEN not in problem and all(TOKEN not in str(r.__dict__) for r in caplog.records)
