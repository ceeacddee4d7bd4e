"""The OTLP/gRPC receiver: TraceService and LogsService Export.

Requests arrive as bytes and go to the native splitter as they are; a body that is not a valid
request gets INVALID_ARGUMENT with the reason (not retried by exporters) and is counted. MetricsService is
not registered: gRPC answers its calls with UNIMPLEMENTED.

A request over otlp.max_request_bytes (its size once decompressed) gets RESOURCE_EXHAUSTED naming the
limit and is counted as "too_large". grpcio's own receive limit is set above ours (see
_grpc_receive_limit) so that such requests reach the handler, where they are refused with that
message; grpcio still refuses those over its limit itself (RESOURCE_EXHAUSTED, its own message),
which bounds the memory one request can take. Those are counted as "too_large" too: the methods
are registered as stream-unary (the same on the wire as unary), so the handler runs before the
request message is read and sees that none arrived, where a unary handler would never run
(_read_request).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tether.agent.delivery import BackpressureError
from tether.agent.sources.otlp import RETRY_AFTER_SECONDS, Accepted, InvalidRequestError, OtlpIngest
from tether.schemas.records import OTLP_SIGNAL_NAMES, Signal

log = logging.getLogger("tether.agent.otlp")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


class OtlpGrpcHandlers:
    def __init__(self, ingest: OtlpIngest) -> None:
        self.ingest = ingest

    async def traces(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> ExportTraceServiceResponse:
        result = await self._export(requests, "spans", context)
        response = ExportTraceServiceResponse()
        if result is not None and result.rejected:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.message
        return response

    async def logs(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> ExportLogsServiceResponse:
        result = await self._export(requests, "logs", context)
        response = ExportLogsServiceResponse()
        if result is not None and (result.rejected or result.message):  # a message alone: a warning
            response.partial_success.rejected_log_records = result.rejected
            response.partial_success.error_message = result.message
        return response

    async def _export(
        self, requests: AsyncIterator[bytes], signal: Signal, context: grpc.aio.ServicerContext
    ) -> Accepted | None:
        metadata = dict(context.invocation_metadata() or ())
        if not self.ingest.authorized(metadata.get("authorization")):
            self.ingest.metrics.otlp_requests.labels(OTLP_SIGNAL_NAMES[signal], "grpc", "unauthorized").inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        body = await self._read_request(requests, signal, context)
        limit = self.ingest.config.max_request_bytes
        if len(body) > limit:
            self.ingest.metrics.otlp_requests.labels(OTLP_SIGNAL_NAMES[signal], "grpc", "too_large").inc()
            message = (
                f"the request ({len(body)} bytes) is larger than the limit of {limit} bytes "
                "(otlp.max_request_bytes); send smaller batches"
            )
            log.warning(
                "OTLP/gRPC request too large", extra={"signal": OTLP_SIGNAL_NAMES[signal], "error": message}
            )
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        try:
            if signal == "spans":
                return await self.ingest.traces(body, "grpc")
            return await self.ingest.logs(body, "grpc")
        except InvalidRequestError as error:
            self.ingest.metrics.otlp_requests.labels(OTLP_SIGNAL_NAMES[signal], "grpc", "bad_request").inc()
            log.warning(
                "undecodable OTLP/gRPC request",
                extra={"signal": OTLP_SIGNAL_NAMES[signal], "error": str(error)},
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except BackpressureError as error:
            await _backpressure(context, error)
        return None

    async def _read_request(
        self, requests: AsyncIterator[bytes], signal: Signal, context: grpc.aio.ServicerContext
    ) -> bytes:
        """The one request message of the call.

        grpcio refuses a message over its receive limit itself, answering the client
        RESOURCE_EXHAUSTED, and the stream then ends without a message: counted as too_large.
        A unary client always sends one message; a call that ends without one is counted so too
        (the handler cannot tell the two apart), and a second message is a bad request.
        """
        label = OTLP_SIGNAL_NAMES[signal]
        messages: list[bytes] = []  # each at most grpcio's limit; a second is not waited for
        async for message in requests:
            messages.append(message)
            if len(messages) > 1:
                break
        if len(messages) == 1:
            return messages[0]
        if not messages:
            self.ingest.metrics.otlp_requests.labels(label, "grpc", "too_large").inc()
            log.warning(
                "OTLP/gRPC request refused by grpcio (larger than its receive limit)",
                extra={"signal": label, "limit": _grpc_receive_limit(self.ingest.config.max_request_bytes)},
            )
            # grpcio has already answered RESOURCE_EXHAUSTED; this only ends a call without one.
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "no request message arrived (larger than the receive limit?)",
            )
        self.ingest.metrics.otlp_requests.labels(label, "grpc", "bad_request").inc()
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Export takes exactly one request message")
        raise AssertionError("abort raises")


async def _backpressure(context: grpc.aio.ServicerContext, error: BackpressureError) -> None:
    # OTLP: RESOURCE_EXHAUSTED is retryable; exporters back off and retry.
    await context.send_initial_metadata((("retry-after", str(RETRY_AFTER_SECONDS)),))
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))


def _grpc_receive_limit(max_request_bytes: int) -> int:
    """grpcio's max receive message length: twice ours, so that requests up to twice the limit
    reach the handler to be refused and counted, while grpcio itself still refuses bigger ones
    before buffering them whole (it buffers a message entirely before the handler runs)."""
    return 2 * max_request_bytes


def _unary(
    handler: Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Awaitable[Any]],
) -> grpc.RpcMethodHandler:
    """A unary method, served as stream-unary so that the handler also sees the calls whose message
    grpcio refused (see _read_request)."""
    return grpc.stream_unary_rpc_method_handler(
        handler, request_deserializer=None, response_serializer=lambda response: response.SerializeToString()
    )


@dataclass(frozen=True, slots=True)
class OtlpGrpcServer:
    """A started gRPC server and the port it listens on (the one picked when asked for port 0)."""

    server: grpc.aio.Server
    port: int

    async def stop(self, grace: float | None) -> None:
        await self.server.stop(grace)


async def start_grpc_receiver(endpoint: str, ingest: OtlpIngest) -> OtlpGrpcServer:
    config = ingest.config
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", _grpc_receive_limit(config.max_request_bytes))]
    )
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
    return OtlpGrpcServer(server, port)
