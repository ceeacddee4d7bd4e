"""Parsing one JSON log line into the fields the pipeline routes and correlates on."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import orjson

from tether.agent.body_keys import BodyKeys, without_members
from tether.schemas.log_fields import LogFieldMapping

MAX_UNIX_NANO = 2**64 - 1  # time_unix_nano is a fixed64
_FRACTION = re.compile(r"^(.*?T\d{2}:\d{2}:\d{2})[.,](\d+)(.*)$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_JSON_SPACE = " \t\r\n"  # what JSON allows before a value


@dataclass(slots=True)
class ParsedLine:
    text: str  # the body: the line, UTF-8 decoded (invalid bytes replaced), maybe less its keys
    time_unix_nano: int  # 0 when the line has no usable timestamp
    level: str
    severity_number: int
    trace_id: bytes  # b"" when absent or invalid
    span_id: bytes
    service: str
    parse_error: bool
    invalid_utf8: bool = False
    truncated: bool = False
    keys_moved: bool = False  # the routing keys left the body (agent/body_keys.py)


def parse_line(
    raw: bytes, mapping: LogFieldMapping, truncated: bool = False, body_keys: BodyKeys | None = None
) -> ParsedLine:
    """The line's routing fields; with `body_keys`, its body without the keys they came from,
    when agent/body_keys.py allows."""
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
        # Plain text (a container's stdout, a stack trace) is a message, not an error: only a line
        # that starts as a JSON object and is none failed to parse.
        parse_error = text.lstrip(_JSON_SPACE).startswith("{")
        return ParsedLine(text, 0, "", 0, b"", b"", "", parse_error, invalid_utf8, truncated)
    level_key, level_value = mapping.lookup(record, mapping.level, scalar=True)
    level = _string(level_value)
    if level_key is None and mapping.has_any(record, mapping.implied_level.when_any_of):
        severity = mapping.implied_level.severity_number
    elif isinstance(level_value, int) and not isinstance(level_value, bool):
        severity = mapping.numeric_levels.get(level_value, 0)
    else:
        severity = mapping.severity_number(level) if level else 0
    trace_id, parent_span_id = trace_context(mapping.lookup(record, mapping.trace_id, scalar=True)[1])
    span_id = _hex_id(mapping.lookup(record, mapping.span_id, scalar=True)[1], 8)
    time_unix_nano = parse_timestamp(mapping.lookup(record, mapping.timestamp, scalar=True)[1])
    moved = None
    if body_keys is not None and not truncated and not invalid_utf8:
        moved = _moved_keys(body_keys.movable(raw, record), time_unix_nano, level, trace_id, span_id)
    return ParsedLine(
        text=without_members(raw, moved).decode() if moved else text,
        time_unix_nano=time_unix_nano,
        level=level,
        severity_number=severity,
        trace_id=trace_id,
        span_id=span_id if span_id or not trace_id else parent_span_id,
        service=_string(mapping.lookup_service(record)[1]),
        parse_error=False,
        invalid_utf8=invalid_utf8,
        truncated=truncated,
        keys_moved=bool(moved),
    )


def _moved_keys(
    found: list[tuple[str, Any]] | None, time_unix_nano: int, level: str, trace_id: bytes, span_id: bytes
) -> set[str] | None:
    """The keys that leave the body: all the roles found, when the record carries every value."""
    if found is None:
        return None
    (ts_key, _), (level_key, _), (trace_key, trace), (span_key, _), (service_key, service) = found
    carried = (
        (not ts_key or time_unix_nano != 0)
        and (not level_key or level != "")
        and (not trace_key or (isinstance(trace, str) and len(trace) == 32 and trace_id != b""))
        and (not span_key or span_id != b"")
        and (not service_key or _string(service) != "")
    )
    keys = {key for key, _ in found if key}
    return keys if carried and keys else None


def trace_context(value: Any) -> tuple[bytes, bytes]:
    """The trace id of a trace id field's value, and the span id when the value names one too.

    Taken: 32 hex digits in either case; a W3C traceparent (`00-<trace id>-<span id>-<flags>`,
    which names the span too); Google Cloud's `projects/<project>/traces/<trace id>`.
    """
    if not isinstance(value, str):
        return b"", b""
    if len(value) == 55 and value[2] == value[35] == value[52] == "-" and _is_hex(value[:2] + value[53:]):
        trace_id = _hex_id(value[3:35], 16)
        return trace_id, _hex_id(value[36:52], 8) if trace_id else b""
    marker = value.rfind("/traces/")
    if marker >= 0 and value.startswith("projects/"):
        value = value[marker + len("/traces/") :]
    return _hex_id(value, 16), b""


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


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _string(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)
