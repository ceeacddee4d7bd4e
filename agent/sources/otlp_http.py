"""The OTLP/HTTP receiver (OTLP 1.x): POST /v1/traces and POST /v1/logs.

Bodies are binary protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`: proto3
JSON with lowerCamelCase or snake_case names, enums as names or numbers, trace and span ids as
hex), optionally `Content-Encoding: gzip` or `deflate`. A request is answered once its data is
durable (acknowledged by Kafka or in the spool), with the Export*ServiceResponse in the request's
encoding, carrying partial_success when some items were rejected (or, as a warning with none
rejected, when log records lost malformed ids). A span's or log record's bad traceId / spanId in
OTLP/JSON is judged like the same content in protobuf (otlp_http_body.py), not refused whole.
Unknown JSON fields and enum names are ignored, as proto3 JSON parsers do for forward
compatibility.

Failures carry a google.rpc.Status in the request's encoding (JSON when that is unknown):

    400  the body cannot be decoded (bad protobuf, JSON, gzip)            not retryable
    401  missing or wrong bearer token                                    not retryable
    404  another path, including /v1/metrics (metrics are not accepted)   not retryable
    405  a method other than POST                                         not retryable
    413  body, or body once decompressed, over otlp.max_request_bytes     not retryable
    415  Content-Type or Content-Encoding not supported                   not retryable
    503  at capacity (Kafka slow or down and the spool full); Retry-After  retryable
    500  a bug or an unexpected failure (logged with its stack trace)

aiohttp answers 400 itself, before any handler, to what its parser refuses (a malformed request
line, bad headers, a request line or header over its size limits); _ParserErrorCounter counts those
with signal "other" (the path is not known) and outcome "bad_request".
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from google.protobuf import json_format
from google.protobuf.message import Message

# googleapis-common-protos ships .pyi stubs but no py.typed marker.
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tether.agent.delivery import BackpressureError
from tether.agent.metrics import AgentMetrics
from tether.agent.sources.otlp import RETRY_AFTER_SECONDS, Accepted, InvalidRequestError, OtlpIngest
from tether.agent.sources.otlp_http_body import (
    CONTENT_TYPES,
    FORMATS,
    JSON_TYPE,
    PROTOBUF_TYPE,
    Format,
    Rejection,
    content_coding,
    export_request,
    read_body,
    too_large,
)
from tether.schemas.records import OTLP_SIGNAL_NAMES, Signal

log = logging.getLogger("tether.agent.otlp")

_ROUTES: dict[str, Signal] = {"/v1/traces": "spans", "/v1/logs": "logs"}
METRICS_PATH = "/v1/metrics"
# Set on every request _handle sees; a response to a request without it came from aiohttp itself.
_HANDLED = web.RequestKey("tether_otlp_handled", bool)


def _parser_error_counter(metrics: AgentMetrics) -> type[AbstractAccessLogger]:
    """An aiohttp access logger class that counts the responses aiohttp made without our handler.

    aiohttp has no hook for the requests its parser refuses: it answers them through
    RequestHandler.handle_error, which an application cannot replace without subclassing aiohttp's
    Server, but it passes every response, those included, to the access logger.
    """

    class _ParserErrorCounter(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            if request.get(_HANDLED):
                return
            outcome = "bad_request" if response.status < 500 else "error"
            metrics.otlp_requests.labels("other", "http", outcome).inc()
            # Debug: aiohttp logs these itself (aiohttp.server), and a port scanner makes many.
            log.debug(
                "OTLP/HTTP request refused by the HTTP parser",
                extra={"status": response.status, "outcome": outcome, "peer": request.remote},
            )

    return _ParserErrorCounter


class OtlpHttpServer:
    """The aiohttp server behind POST /v1/traces and /v1/logs; `port` is the port it listens on."""

    def __init__(self, endpoint: str, ingest: OtlpIngest) -> None:
        host, _, port = endpoint.rpartition(":")
        self.endpoint = endpoint
        self.host = host.removeprefix("[").removesuffix("]")
        self.port = int(port)
        self.ingest = ingest
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        # Requests wait in ingest at most this long for their data to become durable; stop()
        # lets requests in flight finish within it before closing their connections.
        grace = ingest.max_wait_seconds + 1
        # auto_decompress=False: we inflate the body ourselves, with a bound (zip bombs).
        # The access logger only counts what aiohttp answered itself (see _parser_error_counter).
        self._runner = web.AppRunner(
            app,
            access_log=log,
            access_log_class=_parser_error_counter(ingest.metrics),
            auto_decompress=False,
            shutdown_timeout=grace,
        )

    async def start(self) -> None:
        tls = self.ingest.config.tls
        context: ssl.SSLContext | None = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert_file, tls.key_file)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=context)
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            raise OSError(
                f"otlp.http_endpoint: cannot listen on {self.endpoint} (port in use?): {error}"
            ) from error
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        log.info(
            "OTLP/HTTP receiver listening",
            extra={
                "endpoint": f"{self.host}:{self.port}",
                "tls": tls is not None,
                "paths": list(_ROUTES),
            },
        )

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request[_HANDLED] = True
        signal = _ROUTES.get(request.path)
        label = (
            OTLP_SIGNAL_NAMES[signal] if signal else ("metrics" if request.path == METRICS_PATH else "other")
        )
        fmt = FORMATS.get(request.content_type)
        try:
            return await self._export(request, signal, fmt)
        except Rejection as reject:
            return self._reject(request, label, fmt, reject)
        except Exception as error:  # never let one request take the receiver down
            log.exception("OTLP/HTTP request failed", extra={"signal": label, "path": request.path[:200]})
            self.ingest.metrics.otlp_requests.labels(label, "http", "error").inc()
            status = status_pb2.Status(
                code=code_pb2.INTERNAL, message=f"internal error: {type(error).__name__}"
            )
            return _response(500, status, fmt or "json")

    async def _export(self, request: web.Request, signal: Signal | None, fmt: Format | None) -> web.Response:
        if signal is None:
            if request.path == METRICS_PATH:
                raise Rejection(
                    404,
                    "not_found",
                    "metrics are not accepted here: this receiver takes traces (/v1/traces) and logs "
                    "(/v1/logs) only",
                    code=code_pb2.UNIMPLEMENTED,
                )
            raise Rejection(
                404,
                "not_found",
                f"no OTLP endpoint at {request.path[:200]!r}: POST to /v1/traces or /v1/logs",
                code=code_pb2.NOT_FOUND,
            )
        if request.method != "POST":
            raise Rejection(
                405,
                "method_not_allowed",
                f"{request.method[:20]} is not allowed on {request.path}: OTLP exports are POST",
                code=code_pb2.UNIMPLEMENTED,
                headers={"Allow": "POST"},
            )
        if not self.ingest.authorized(request.headers.get("Authorization")):
            raise Rejection(
                401,
                "unauthorized",
                "missing or wrong bearer token (Authorization: Bearer <token>)",
                code=code_pb2.UNAUTHENTICATED,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if fmt is None:
            raise Rejection(
                415,
                "unsupported_media_type",
                f"Content-Type {request.content_type[:100]!r} is not supported: use "
                f"{PROTOBUF_TYPE} or {JSON_TYPE}",
            )
        wbits = content_coding(request.headers.get("Content-Encoding", ""))
        limit = self.ingest.config.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise too_large(f"the body ({request.content_length} bytes)", limit)
        body = await read_body(request, limit)

        if signal == "spans":
            payload = await export_request(body, wbits, limit, fmt, "spans")
            result = await self._ingest(self.ingest.traces(payload, "http"))
            trace_response = ExportTraceServiceResponse()
            if result.rejected:
                trace_response.partial_success.rejected_spans = result.rejected
                trace_response.partial_success.error_message = result.message
            return _response(200, trace_response, fmt)
        payload = await export_request(body, wbits, limit, fmt, "logs")
        result = await self._ingest(self.ingest.logs(payload, "http"))
        logs_response = ExportLogsServiceResponse()
        if result.rejected or result.message:  # a message alone: a warning (malformed ids cleared)
            logs_response.partial_success.rejected_log_records = result.rejected
            logs_response.partial_success.error_message = result.message
        return _response(200, logs_response, fmt)

    async def _ingest(self, call: Awaitable[Accepted]) -> Accepted:
        try:
            return await call
        except InvalidRequestError as error:
            raise Rejection(400, "bad_request", str(error)) from error
        except BackpressureError as error:
            # Counted by ingest (outcome "backpressure"); OTLP exporters retry a 503 after Retry-After.
            raise Rejection(
                503,
                "",
                str(error),
                code=code_pb2.UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from error

    def _reject(
        self, request: web.Request, label: str, fmt: Format | None, reject: Rejection
    ) -> web.Response:
        if reject.outcome:  # "" when ingest counted it already
            self.ingest.metrics.otlp_requests.labels(label, "http", reject.outcome).inc()
        if reject.rejected_items:
            self.ingest.metrics.otlp_rejected.labels(label, "http", reject.outcome).inc(reject.rejected_items)
        log.warning(
            "OTLP/HTTP request rejected",
            extra={
                "signal": label,
                "status": reject.status,
                "outcome": reject.outcome or "backpressure",
                "error": reject.message,
                "path": request.path[:200],
                "content_type": request.content_type[:100],
                "peer": request.remote,
            },
        )
        response = _response(reject.status, status_pb2.Status(code=reject.code, message=reject.message), fmt)
        response.headers.update(reject.headers)
        return response


async def start_http_receiver(endpoint: str, ingest: OtlpIngest) -> OtlpHttpServer:
    server = OtlpHttpServer(endpoint, ingest)
    await server.start()
    return server


def _response(status: int, message: Message, fmt: Format | None) -> web.Response:
    fmt = fmt or "json"
    body = orjson.dumps(json_format.MessageToDict(message)) if fmt == "json" else message.SerializeToString()
    return web.Response(status=status, body=body, content_type=CONTENT_TYPES[fmt])
