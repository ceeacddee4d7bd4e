"""The OTLP/gRPC receiver: TraceService and LogsService Export.

Requests arrive as bytes and are decoded here, so a body that is not valid protobuf gets
INVALID_ARGUMENT with the reason (not retried by exporters) and is counted. MetricsService is
not registered: gRPC answers its calls with UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from agent.delivery import BackpressureError
from agent.sources.otlp import RETRY_AFTER_SECONDS, OtlpIngest, Signal

log = logging.getLogger("tether.agent.otlp")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


class OtlpGrpcHandlers:
    def __init__(self, ingest: OtlpIngest) -> None:
        self.ingest = ingest

    async def traces(self, body: bytes, context: grpc.aio.ServicerContext) -> ExportTraceServiceResponse:
        request = await self._decode(body, ExportTraceServiceRequest, "traces", context)
        response = ExportTraceServiceResponse()
        try:
            result = await self.ingest.traces(request, "grpc")
        except BackpressureError as error:
            await _backpressure(context, error)
        if result.rejected:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.message
        return response

    async def logs(self, body: bytes, context: grpc.aio.ServicerContext) -> ExportLogsServiceResponse:
        request = await self._decode(body, ExportLogsServiceRequest, "logs", context)
        try:
            await self.ingest.logs(request, "grpc")
        except BackpressureError as error:
            await _backpressure(context, error)
        return ExportLogsServiceResponse()

    async def _decode(
        self, body: bytes, message: Any, signal: Signal, context: grpc.aio.ServicerContext
    ) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        if not self.ingest.authorized(metadata.get("authorization")):
            self.ingest.metrics.otlp_requests.labels(signal, "grpc", "unauthorized").inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            return message.FromString(body)
        except DecodeError as error:
            self.ingest.metrics.otlp_requests.labels(signal, "grpc", "bad_request").inc()
            log.warning("undecodable OTLP/gRPC request", extra={"signal": signal, "error": str(error)})
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {message.DESCRIPTOR.name}: {error}"
            )


async def _backpressure(context: grpc.aio.ServicerContext, error: BackpressureError) -> None:
    # OTLP: RESOURCE_EXHAUSTED is retryable; exporters back off and retry.
    await context.send_initial_metadata((("retry-after", str(RETRY_AFTER_SECONDS)),))
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))


def _unary(handler: Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=None, response_serializer=lambda response: response.SerializeToString()
    )


async def start_grpc_receiver(endpoint: str, ingest: OtlpIngest) -> grpc.aio.Server:
    config = ingest.config
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", config.max_request_bytes)])
    handlers = OtlpGrpcHandlers(ingest)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": _unary(handlers.traces)}),
            grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": _unary(handlers.logs)}),
        )
    )
    if config.tls is not None:
        credentials = grpc.ssl_server_credentials(
            [(config.tls.key_file.read_bytes(), config.tls.cert_file.read_bytes())]
        )
        port = server.add_secure_port(endpoint, credentials)
    else:
        port = server.add_insecure_port(endpoint)
    if port == 0:
        raise OSError(f"otlp.grpc_endpoint: cannot listen on {endpoint} (port in use?)")
    await server.start()
    log.info("OTLP/gRPC receiver listening", extra={"endpoint": endpoint, "tls": config.tls is not None})
    return server
