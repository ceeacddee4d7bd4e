"""Reading OTLP/HTTP request bodies and turning them into the protobuf bytes the splitter takes.

A protobuf body is passed on as sent (inflated when compressed); an OTLP/JSON body is decoded,
its hex ids made base64 for proto3 JSON, and serialized to protobuf. What cannot be read or
decoded raises Rejection, carrying the HTTP status and the google.rpc code to answer with.

An id (traceId, spanId, parentSpanId, a link's) that is a string but no valid id (wrong
length, not hex) does not fail the request: it becomes the bytes it spells (hex of the wrong
length) or a byte string no id can be (not hex), so that the splitter judges the item exactly
as it judges the same content in protobuf (spans rejected, log records kept without the id)
and the request is a partial success. An id that is no string at all is not OTLP/JSON: 400.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf import json_format
from google.protobuf.message import DecodeError

# googleapis-common-protos ships .pyi stubs but no py.typed marker.
from google.rpc import code_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tether.schemas.records import Signal

Format = Literal["protobuf", "json"]

PROTOBUF_TYPE = "application/x-protobuf"
JSON_TYPE = "application/json"
FORMATS: dict[str, Format] = {PROTOBUF_TYPE: "protobuf", JSON_TYPE: "json"}
CONTENT_TYPES: dict[Format, str] = {"protobuf": PROTOBUF_TYPE, "json": JSON_TYPE}

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


class Rejection(Exception):
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


def too_large(what: str, limit: int) -> Rejection:
    return Rejection(
        413,
        "too_large",
        f"{what} is larger than the limit of {limit} bytes (otlp.max_request_bytes); send smaller batches",
        code=code_pb2.RESOURCE_EXHAUSTED,
    )


def content_coding(header: str) -> int | None:
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
    raise Rejection(
        415,
        "unsupported_media_type",
        f"Content-Encoding {header[:100]!r} is not supported: use gzip, deflate or none",
        headers={"Accept-Encoding": ACCEPT_ENCODING},
    )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, never more than `limit` bytes of it (chunked bodies carry no Content-Length)."""
    body = bytearray()
    try:
        while chunk := await request.content.read(_READ_CHUNK):
            body += chunk
            if len(body) > limit:
                raise too_large("the body", limit)
    except (HttpProcessingError, ClientPayloadError, ConnectionError) as error:
        raise Rejection(400, "bad_request", f"the body could not be read: {error}") from error
    return bytes(body)


async def export_request(body: bytes, wbits: int | None, limit: int, fmt: Format, signal: Signal) -> bytes:
    """The export request of `signal` in `body` as protobuf bytes: a protobuf body as sent
    (inflated), a JSON one converted. `wbits` says how it is compressed (None: it is not)."""
    if fmt == "protobuf":
        if wbits is None:
            return body
        return await _decode_off_loop(body, wbits, lambda: _inflate(body, wbits, limit))
    if signal == "spans":
        traces = await _decode_off_loop(
            body, wbits, lambda: _decode(body, wbits, limit, fmt, ExportTraceServiceRequest, _TRACE_PATHS)
        )
        return traces.SerializeToString()
    logs = await _decode_off_loop(
        body, wbits, lambda: _decode(body, wbits, limit, fmt, ExportLogsServiceRequest, _LOG_PATHS)
    )
    return logs.SerializeToString()


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
                    raise Rejection(400, "bad_request", "the compressed body is truncated")
                out += chunk
                if len(out) > limit:
                    raise too_large("the decompressed body", limit)
        except zlib.error as error:
            name = "gzip" if wbits > zlib.MAX_WBITS else "deflate (zlib)"
            raise Rejection(400, "bad_request", f"the body is not valid {name} data: {error}") from error
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
            raise Rejection(
                400, "bad_request", f"the body is not a valid {message_type.__name__} (protobuf): {error}"
            ) from error
        return request
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise Rejection(400, "bad_request", f"the body is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise Rejection(400, "bad_request", f"OTLP/JSON body must be an object ({message_type.__name__})")
    try:
        _hex_ids_to_base64(document, id_paths)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except Rejection as reject:
        reject.rejected_items = _count_items(document, id_paths)
        raise
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as error:
        raise Rejection(
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
    ids: tuple[tuple[str, ...], ...]  # id fields of an item, by both spellings
    nested: _IdPaths | None = None  # lists below an item whose entries carry ids too (span links)


_TRACE_ID = ("traceId", "trace_id")
_SPAN_ID = ("spanId", "span_id")
_TRACE_PATHS = _IdPaths(
    (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans",)),
    (_TRACE_ID, _SPAN_ID, ("parentSpanId", "parent_span_id")),
    _IdPaths((("links",),), (_TRACE_ID, _SPAN_ID)),
)
_LOG_PATHS = _IdPaths(
    (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records")),
    (_TRACE_ID, _SPAN_ID),
)
# What a traceId / spanId that is not hex becomes: one byte, no valid id's length.
_NOT_AN_ID = base64.b64encode(b"\0").decode("ascii")


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
        for names in paths.ids:
            for name in names:
                value = item.get(name)
                if value is not None and value != "":
                    item[name] = _hex_to_base64(value, where + name)
        if paths.nested is not None:
            _hex_ids_to_base64(item, paths.nested, f"{where}{paths.nested.lists[0][0]}[].")


def _hex_to_base64(value: Any, name: str) -> str:
    """The id's bytes, whatever their number (the splitter judges it), in base64; a string that
    is not hex becomes _NOT_AN_ID."""
    if not isinstance(value, str):
        raise Rejection(
            400,
            "bad_request",
            f"invalid {name} {repr(value)[:80]}: must be a hex string, not {type(value).__name__}",
        )
    try:
        return base64.b64encode(binascii.unhexlify(value.encode("ascii"))).decode("ascii")
    except (UnicodeEncodeError, binascii.Error):
        return _NOT_AN_ID
