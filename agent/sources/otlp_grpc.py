"""The OTLP/gRPC receiver: TraceService and LogsService Export.

MetricsService is not registered, so gRPC answers its calls with UNIMPLEMENTED. A request that
is not valid protobuf is answered by gRPC itself (INTERNAL, "Exception deserializing request").
"""

from __future__ import annotations

import logging

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from agent.delivery import BackpressureError
from agent.sources.otlp import RETRY_AFTER_SECONDS, OtlpIngest

log = logging.getLogger("tether.agent.otlp")


async def _check_auth(ingest: OtlpIngest, context: grpc.aio.ServicerContext) -> None:
    metadata = dict(context.invocation_metadata() or ())
    if not ingest.authorized(metadata.get("authorization")):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


async def _backpressure(context: grpc.aio.ServicerContext, error: BackpressureError) -> None:
    # OTLP: RESOURCE_EXHAUSTED with RetryInfo is retryable; exporters back off and retry.
    await context.send_initial_metadata((("retry-after", str(RETRY_AFTER_SECONDS)),))
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, ingest: OtlpIngest) -> None:
        self.ingest = ingest

    async def Export(  # the gRPC method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        await _check_auth(self.ingest, context)
        response = trace_service_pb2.ExportTraceServiceResponse()
        try:
            result = await self.ingest.traces(request, "grpc")
        except BackpressureError as error:
            await _backpressure(context, error)
            return response
        if result.rejected:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.message
        return response


class LogsReceiver(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, ingest: OtlpIngest) -> None:
        self.ingest = ingest

    async def Export(  # the gRPC method name
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.aio.ServicerContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        await _check_auth(self.ingest, context)
        try:
            await self.ingest.logs(request, "grpc")
        except BackpressureError as error:
            await _backpressure(context, error)
        return logs_service_pb2.ExportLogsServiceResponse()


async def start_grpc_receiver(endpoint: str, ingest: OtlpIngest) -> grpc.aio.Server:
    config = ingest.config
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", config.max_request_bytes)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceReceiver(ingest), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsReceiver(ingest), server)
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
