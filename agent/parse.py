"""Parsing one JSON log line into the fields the pipeline routes and correlates on."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import orjson

from tether.schemas.log_fields import LogFieldMapping

MAX_UNIX_NANO = 2**64 - 1  # time_unix_nano is a fixed64
_FRACTION = re.compile(r"^(.*?T\d{2}:\d{2}:\d{2})[.,](\d+)(.*)$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")


@dataclass(slots=True)
class ParsedLine:
    text: str  # the original line, UTF-8 decoded (invalid bytes replaced)
    time_unix_nano: int  # 0 when the line has no usable timestamp
    level: str
    severity_number: int
    trace_id: bytes  # b"" when absent or invalid
    span_id: bytes
    service: str
    parse_error: bool
    invalid_utf8: bool = False
    truncated: bool = False


def parse_line(raw: bytes, mapping: LogFieldMapping, truncated: bool = False) -> ParsedLine:
    try:
        text = raw.decode("utf-8")
        source: bytes | str = raw
        invalid_utf8 = False
    except UnicodeDecodeError:
        # Kept, with the bad bytes replaced, and flagged; the JSON in it may still be usable.
        text = source = raw.decode("utf-8", errors="replace")
        invalid_utf8 = True
    try:
        record = orjson.loads(source)
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        return ParsedLine(text, 0, "", 0, b"", b"", "", True, invalid_utf8, truncated)
    level = _string(mapping.lookup(record, mapping.level, scalar=True)[1])
    return ParsedLine(
        text=text,
        time_unix_nano=parse_timestamp(mapping.lookup(record, mapping.timestamp, scalar=True)[1]),
        level=level,
        severity_number=mapping.severity_number(level) if level else 0,
        trace_id=_hex_id(mapping.lookup(record, mapping.trace_id, scalar=True)[1], 16),
        span_id=_hex_id(mapping.lookup(record, mapping.span_id, scalar=True)[1], 8),
        service=_string(mapping.lookup(record, mapping.service, scalar=True)[1]),
        parse_error=False,
        invalid_utf8=invalid_utf8,
        truncated=truncated,
    )


def parse_timestamp(value: Any) -> int:
    """Unix nanoseconds from RFC 3339 / ISO 8601 (any offset) or epoch s/ms/us/ns; 0 if unusable."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int | float):
        return _epoch_to_ns(value)
    if isinstance(value, str):
        text = value.strip()
        if text.replace(".", "", 1).isdigit():
            return _epoch_to_ns(float(text) if "." in text else int(text))
        # datetime stops at microseconds: take the fraction apart to keep nanoseconds.
        fraction_ns = 0
        match = _FRACTION.match(text)
        if match:
            text = match.group(1) + match.group(3)
            fraction_ns = int(match.group(2)[:9].ljust(9, "0"))
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            return 0
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        delta = parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return _in_range((delta.days * 86_400 + delta.seconds) * 1_000_000_000 + fraction_ns)
    return 0


def _in_range(ns: int) -> int:
    """0 (unusable, observed time is used) for instants before 1970 or beyond fixed64."""
    return ns if 0 <= ns <= MAX_UNIX_NANO else 0


def _epoch_to_ns(value: float) -> int:
    """Epoch seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude."""
    magnitude = abs(value)
    if magnitude != magnitude or magnitude == float("inf"):
        return 0
    if magnitude < 1e11:  # seconds until the year 5138
        return _in_range(int(value * 1_000_000_000))
    if magnitude < 1e14:
        return _in_range(int(value * 1_000_000))
    if magnitude < 1e17:
        return _in_range(int(value * 1_000))
    return _in_range(int(value))


def _hex_id(value: Any, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != size * 2 or not _HEX.match(value):
        return b""
    try:
        parsed = bytes.fromhex(value)
    except ValueError:
        return b""
    return b"" if parsed == bytes(size) else parsed


def _string(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)
