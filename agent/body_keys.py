"""Routing keys out of the body: a file line's record carries its timestamp, level, trace id,
span id and service in OTLP fields of their own, so by default the body leaves those keys out.

Why: Kafka bytes are what users pay for (times replication and retention). A trace id and a span
id are random bytes, so they compress to nothing less than themselves, and the line held them a
second time as hex; with the five keys out a ~290-byte line costs ~40 % fewer compressed bytes,
and the compressor reads ~40 % fewer bytes (docs/performance-history.md).

The documents do not change: the collector leaves these very keys out of `data` and takes their
values from the record's fields (collector/documents.py). So a line's keys move only when the
collector would find the same keys again and the record carries every value exactly:

- each routing role's value (the first name with a scalar, as `LogFieldMapping.lookup`) is under a
  top-level key, not a nested path, and no key is a message, template or data name (or the first
  part of one): those the collector reads again;
- the line has no message template (rendered from the line's own keys), and fewer than
  DOCUMENT_JSON_MAX_DEPTH (200) `{` and `[` in all: a line nested deeper is indexed as its text;
- the values are carried: a timestamp that parses, a non-empty level and service, a trace id of
  32 and a span id of 16 hex digits (a traceparent or a Cloud trace name says more than the record
  keeps).

Otherwise the line stays whole. A moved line's record has `tether.keys_moved` = true. The Rust
path (native/fastlog/src/chunk.rs, field_mapping.rs movable_keys) gives the same bytes.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from tether.schemas.log_fields import LogFieldMapping
from tether.schemas.records import DOCUMENT_JSON_MAX_DEPTH

_STRING_END = re.compile(rb'(?:[^"\\]|\\.)*"', re.DOTALL)
_CONTAINER_TOKEN = re.compile(rb'["\[\]{}]')
_SCALAR_END = re.compile(rb"[,}\]\s]")
_SPACE = re.compile(rb"[ \t\r\n]*")


class BodyKeys:
    """Which keys of a parsed line may leave its body, under one mapping."""

    def __init__(self, mapping: LogFieldMapping) -> None:
        self.mapping = mapping
        names = (*mapping.message, *mapping.message_template, *mapping.data)
        self._unmovable = frozenset(names) | {name.split(".", 1)[0] for name in names}
        self._roles = (mapping.timestamp, mapping.level, mapping.trace_id, mapping.span_id, mapping.service)

    def movable(self, raw: bytes, record: dict[str, Any]) -> list[tuple[str, Any]] | None:
        """(key, value) of each routing role the line has, when all may move; else None."""
        if raw.count(b"{") + raw.count(b"[") > DOCUMENT_JSON_MAX_DEPTH:
            return None
        if self.mapping.lookup(record, self.mapping.message_template)[0] is not None:
            return None
        found: list[tuple[str, Any]] = []
        for names in self._roles:
            key, value = self.mapping.lookup(record, names, scalar=True)
            if key is None:
                found.append(("", None))
                continue
            if key not in record or key in self._unmovable:
                return None  # a nested path, or a key the collector reads again
            found.append((key, value))
        return found


def without_members(raw: bytes, keys: set[str]) -> bytes:
    """A JSON object's text (valid, as orjson took it) less every top-level member whose key is in
    `keys`: the line's head up to its first member, then its kept members, the text between two
    that were neighbours kept as written and others joined by ",", then its tail after its last
    member (the Rust path copies runs of neighbours at once)."""
    members = top_level_members(raw)
    if not members:
        return raw
    runs: list[bytes] = []
    run_start = run_end = -1
    for key, start, end in members:
        if key in keys:
            if run_start >= 0:
                runs.append(raw[run_start:run_end])
            run_start = -1
        elif run_start >= 0:
            run_end = end
        else:
            run_start, run_end = start, end
    if run_start >= 0:
        runs.append(raw[run_start:run_end])
    return raw[: members[0][1]] + b",".join(runs) + raw[members[-1][2] :]


def top_level_members(raw: bytes) -> list[tuple[str, int, int]]:
    """(decoded key, start of its opening quote, end of its value) of each top-level member."""
    out: list[tuple[str, int, int]] = []
    i = _skip_space(raw, raw.index(b"{") + 1)
    while raw[i] != ord("}"):
        key_end = _string_end(raw, i + 1)
        key = orjson.loads(raw[i:key_end])
        value_start = _skip_space(raw, _skip_space(raw, key_end) + 1)  # past the ':'
        value_end = _value_end(raw, value_start)
        out.append((key, i, value_end))
        i = _skip_space(raw, value_end)
        if raw[i] == ord(","):
            i = _skip_space(raw, i + 1)
    return out


def _skip_space(raw: bytes, i: int) -> int:
    match = _SPACE.match(raw, i)
    return match.end() if match else i


def _string_end(raw: bytes, i: int) -> int:
    """After the closing quote of the string whose content starts at `i`."""
    match = _STRING_END.match(raw, i)
    assert match is not None, "orjson took the line"
    return match.end()


def _value_end(raw: bytes, i: int) -> int:
    first = raw[i]
    if first == ord('"'):
        return _string_end(raw, i + 1)
    if first in b"[{":
        depth, j = 0, i
        while True:
            token = _CONTAINER_TOKEN.search(raw, j)
            assert token is not None, "orjson took the line"
            j = token.end()
            if token.group() == b'"':
                j = _string_end(raw, j)
            elif token.group() in b"[{":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return j
    scalar = _SCALAR_END.search(raw, i)
    return scalar.start() if scalar else len(raw)
