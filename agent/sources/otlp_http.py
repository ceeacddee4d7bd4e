"""The OTLP/HTTP receiver (OTLP 1.x): POST /v1/traces and POST /v1/logs.

Bodies are binary protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`: proto3
JSON with lowerCamelCase or snake_case names, enums as names or numbers, trace and span ids as
hex), optionally `Content-Encoding: gzip` or `deflate`. A request is answered once its data is
durable (acknowledged by Kafka or in the spool), with the Export*ServiceResponse in the request's
encoding, carrying partial_success when some items were rejected. Unknown JSON fields and enum
names are ignored, as proto3 JSON parsers do for forward compatibility.

Failures carry a google.rpc.Status in the request's encoding (JSON when that is unknown):

    400  the body cannot be decoded (bad protobuf, JSON, hex id, gzip)    not retryable
    401  missing or wrong bearer token                                    not retryable
    404  another path, including /v1/metrics (metrics are not accepted)   not retryable
    405  a method other than POST                                         not retryable
    413  body, or body once decompressed, over otlp.max_request_bytes     not retryable
    415  Content-Type or Content-Encoding not supported                   not retryable
    503  at capacity (Kafka slow or down and the spool full); Retry-After  retryable
    500  a bug or an unexpected failure (logged with its stack trace)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

# googleapis-common-protos ships .pyi stubs but no py.typed marker.
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tether.agent.delivery import BackpressureError
from tether.agent.sources.otlp import RETRY_AFTER_SECONDS, Accepted, InvalidRequestError, OtlpIngest
from tether.schemas.records import OTLP_SIGNAL_NAMES, Signal

log = logging.getLogger("tether.agent.otlp")

Format = Literal["protobuf", "json"]

PROTOBUF_TYPE = "application/x-protobuf"
JSON_TYPE = "application/json"
_FORMATS: dict[str, Format] = {PROTOBUF_TYPE: "protobuf", JSON_TYPE: "json"}
_CONTENT_TYPES: dict[Format, str] = {"protobuf": PROTOBUF_TYPE, "json": JSON_TYPE}

_ROUTES: dict[str, Signal] = {"/v1/traces": "spans", "/v1/logs": "logs"}
METRICS_PATH = "/v1/metrics"

# Content-Encoding values understood; "deflate" is the zlib format (RFC 9110 section 8.4.1.2).
_IDENTITY = frozenset({"", "identity", "none"})
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ACCEPT_ENCODING = "gzip, deflate, identity"

_READ_CHUNK = 64 * 1024
# Bodies larger than this (and all compressed bodies) are decoded in a worker thread, so a big
# request does not hold up every other connection for the time it takes to parse it.
_INLINE_DECODE_BYTES = 256 * 1024

_MAX_MESSAGE_CHARS = 1000

_Request = TypeVar("_Request", ExportTraceServiceRequest, ExportLogsServiceRequest)
_Decoded = TypeVar("_Decoded")


class _Reject(Exception):
    """A request answered with an error status; `outcome` is the otlp_requests label."""

    def __init__(
        self,
        status: int,
        outcome: str,
        message: str,
        *,
        code: int = code_pb2.INVALID_ARGUMENT,
        headers: Mapping[str, str] | None = None,
        rejected_items: int = 0,
    ) -> None:
        if len(message) > _MAX_MESSAGE_CHARS:  # parser errors can be long (deeply nested input)
            message = message[:_MAX_MESSAGE_CHARS] + "..."
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.rejected_items = rejected_items


def _too_large(what: str, limit: int) -> _Reject:
    return _Reject(
        413,
        "too_large",
        f"{what} is larger than the limit of {limit} bytes (otlp.max_request_bytes); send smaller batches",
        code=code_pb2.RESOURCE_EXHAUSTED,
    )


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
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False, shutdown_timeout=grace)

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
        signal = _ROUTES.get(request.path)
        label = (
            OTLP_SIGNAL_NAMES[signal] if signal else ("metrics" if request.path == METRICS_PATH else "other")
        )
        fmt = _FORMATS.get(request.content_type)
        try:
            return await self._export(request, signal, fmt)
        except _Reject as reject:
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
                raise _Reject(
                    404,
                    "not_found",
                    "metrics are not accepted here: this receiver takes traces (/v1/traces) and logs "
                    "(/v1/logs) only",
                    code=code_pb2.UNIMPLEMENTED,
                )
            raise _Reject(
                404,
                "not_found",
                f"no OTLP endpoint at {request.path[:200]!r}: POST to /v1/traces or /v1/logs",
                code=code_pb2.NOT_FOUND,
            )
        if request.method != "POST":
            raise _Reject(
                405,
                "method_not_allowed",
                f"{request.method[:20]} is not allowed on {request.path}: OTLP exports are POST",
                code=code_pb2.UNIMPLEMENTED,
                headers={"Allow": "POST"},
            )
        if not self.ingest.authorized(request.headers.get("Authorization")):
            raise _Reject(
                401,
                "unauthorized",
                "missing or wrong bearer token (Authorization: Bearer <token>)",
                code=code_pb2.UNAUTHENTICATED,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if fmt is None:
            raise _Reject(
                415,
                "unsupported_media_type",
                f"Content-Type {request.content_type[:100]!r} is not supported: use "
                f"{PROTOBUF_TYPE} or {JSON_TYPE}",
            )
        wbits = _content_coding(request.headers.get("Content-Encoding", ""))
        limit = self.ingest.config.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(f"the body ({request.content_length} bytes)", limit)
        body = await _read_body(request, limit)

        if signal == "spans":
            payload = await self._payload(body, wbits, limit, fmt, ExportTraceServiceRequest, _TRACE_PATHS)
            result = await self._ingest(self.ingest.traces(payload, "http"))
            trace_response = ExportTraceServiceResponse()
            if result.rejected:
                trace_response.partial_success.rejected_spans = result.rejected
                trace_response.partial_success.error_message = result.message
            return _response(200, trace_response, fmt)
        payload = await self._payload(body, wbits, limit, fmt, ExportLogsServiceRequest, _LOG_PATHS)
        result = await self._ingest(self.ingest.logs(payload, "http"))
        logs_response = ExportLogsServiceResponse()
        if result.rejected:
            logs_response.partial_success.rejected_log_records = result.rejected
            logs_response.partial_success.error_message = result.message
        return _response(200, logs_response, fmt)

    async def _payload(
        self,
        body: bytes,
        wbits: int | None,
        limit: int,
        fmt: Format,
        message_type: type[_Request],
        id_paths: _IdPaths,
    ) -> bytes:
        """The request as protobuf bytes: a protobuf body as sent (inflated), a JSON one converted."""
        if fmt == "protobuf":
            if wbits is None:
                return body
            return await _decode_off_loop(body, wbits, lambda: _inflate(body, wbits, limit))
        request = await _decode_off_loop(
            body, wbits, lambda: _decode(body, wbits, limit, fmt, message_type, id_paths)
        )
        return request.SerializeToString()

    async def _ingest(self, call: Awaitable[Accepted]) -> Accepted:
        try:
            return await call
        except InvalidRequestError as error:
            raise _Reject(400, "bad_request", str(error)) from error
        except BackpressureError as error:
            # Counted by ingest (outcome "backpressure"); OTLP exporters retry a 503 after Retry-After.
            raise _Reject(
                503,
                "",
                str(error),
                code=code_pb2.UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from error

    def _reject(self, request: web.Request, label: str, fmt: Format | None, reject: _Reject) -> web.Response:
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
    return web.Response(status=status, body=body, content_type=_CONTENT_TYPES[fmt])


def _content_coding(header: str) -> int | None:
    """zlib wbits for the body's Content-Encoding; None when it is not encoded."""
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c not in _IDENTITY]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _WBITS:
        return _WBITS[codings[0]]
    # 415, not 400 (which the OpenTelemetry Collector answers): RFC 9110 section 15.5.16 names 415
    # for a content coding the server does not accept, and asks it to list what it does accept
    # (Accept-Encoding, added below). Both are final for OTLP exporters: the batch is dropped.
    raise _Reject(
        415,
        "unsupported_media_type",
        f"Content-Encoding {header[:100]!r} is not supported: use gzip, deflate or none",
        headers={"Accept-Encoding": ACCEPT_ENCODING},
    )


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, never more than `limit` bytes of it (chunked bodies carry no Content-Length)."""
    body = bytearray()
    try:
        while chunk := await request.content.read(_READ_CHUNK):
            body += chunk
            if len(body) > limit:
                raise _too_large("the body", limit)
    except (HttpProcessingError, ClientPayloadError, ConnectionError) as error:
        raise _Reject(400, "bad_request", f"the body could not be read: {error}") from error
    return bytes(body)


async def _decode_off_loop(body: bytes, wbits: int | None, decode: Callable[[], _Decoded]) -> _Decoded:
    if wbits is not None or len(body) > _INLINE_DECODE_BYTES:  # compressed: may inflate to the limit
        return await asyncio.to_thread(decode)
    return decode()


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Decompress `data`, failing as soon as the output would exceed `limit` bytes."""
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(wbits)
        pending = data
        try:
            while not inflater.eof:
                chunk = inflater.decompress(pending, limit + 1 - len(out))
                pending = inflater.unconsumed_tail
                if not chunk and not pending:
                    raise _Reject(400, "bad_request", "the compressed body is truncated")
                out += chunk
                if len(out) > limit:
                    raise _too_large("the decompressed body", limit)
        except zlib.error as error:
            name = "gzip" if wbits > zlib.MAX_WBITS else "deflate (zlib)"
            raise _Reject(400, "bad_request", f"the body is not valid {name} data: {error}") from error
        data = inflater.unused_data
        # gzip allows several members back to back; anything else after the end is an error
        # that the next round reports (a trailing run of zero bytes is padding, not data).
        if not data.strip(b"\0") or wbits <= zlib.MAX_WBITS:
            return bytes(out)


def _decode(
    body: bytes,
    wbits: int | None,
    limit: int,
    fmt: Format,
    message_type: type[_Request],
    id_paths: _IdPaths,
) -> _Request:
    """The export request in `body`; `wbits` says how it is compressed (None: it is not)."""
    if wbits is not None:
        body = _inflate(body, wbits, limit)
    request = message_type()
    if fmt == "protobuf":
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            raise _Reject(
                400, "bad_request", f"the body is not a valid {message_type.__name__} (protobuf): {error}"
            ) from error
        return request
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _Reject(400, "bad_request", f"the body is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise _Reject(400, "bad_request", f"OTLP/JSON body must be an object ({message_type.__name__})")
    try:
        _hex_ids_to_base64(document, id_paths)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except _Reject as reject:
        reject.rejected_items = _count_items(document, id_paths)
        raise
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as error:
        raise _Reject(
            400,
            "bad_request",
            f"the body is not a valid OTLP/JSON {message_type.__name__}: {error}",
            rejected_items=_count_items(document, id_paths),
        ) from error
    return request


# OTLP/JSON: where the trace and span ids are, by both spellings proto3 JSON allows.
@dataclass(frozen=True, slots=True)
class _IdPaths:
    lists: tuple[tuple[str, ...], ...]  # list fields from the request (or item) down to the items
    ids: tuple[tuple[tuple[str, ...], int], ...]  # id fields of an item, and their size in bytes
    nested: _IdPaths | None = None  # lists below an item whose entries carry ids too (span links)


_TRACE_ID = (("traceId", "trace_id"), 16)
_SPAN_ID = (("spanId", "span_id"), 8)
_TRACE_PATHS = _IdPaths(
    (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans",)),
    (_TRACE_ID, _SPAN_ID, (("parentSpanId", "parent_span_id"), 8)),
    _IdPaths((("links",),), (_TRACE_ID, _SPAN_ID)),
)
_LOG_PATHS = _IdPaths(
    (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records")),
    (_TRACE_ID, _SPAN_ID),
)


def _items(node: Any, lists: tuple[tuple[str, ...], ...]) -> Iterator[dict[str, Any]]:
    """The objects at the end of `lists` below `node`. Parts of the wrong shape are skipped:
    ParseDict reports them."""
    if not isinstance(node, dict):
        return
    if not lists:
        yield node
        return
    for name in lists[0]:
        children = node.get(name)
        if isinstance(children, list):
            for child in children:
                yield from _items(child, lists[1:])


def _count_items(document: dict[str, Any], paths: _IdPaths) -> int:
    return sum(1 for _ in _items(document, paths.lists))


def _hex_ids_to_base64(node: dict[str, Any], paths: _IdPaths, where: str = "") -> None:
    """OTLP/JSON ids are hex strings; proto3 JSON (ParseDict) expects bytes fields as base64."""
    for item in _items(node, paths.lists):
        for names, size in paths.ids:
            for name in names:
                value = item.get(name)
                if value is not None and value != "":
                    item[name] = _hex_to_base64(value, where + name, size)
        if paths.nested is not None:
            _hex_ids_to_base64(item, paths.nested, f"{where}{paths.nested.lists[0][0]}[].")


def _hex_to_base64(value: Any, name: str, size: int) -> str:
    if not isinstance(value, str):
        problem = f"must be a hex string, not {type(value).__name__}"
    elif len(value) != 2 * size:
        problem = f"must be {2 * size} hex digits ({size} bytes), not {len(value)} characters"
    else:
        try:
            return base64.b64encode(binascii.unhexlify(value.encode("ascii"))).decode("ascii")
        except (UnicodeEncodeError, binascii.Error):
            problem = "is not hex (OTLP/JSON ids are hex strings, not base64)"
    raise _Reject(400, "bad_request", f"invalid {name} {repr(value)[:80]}: {problem}")
