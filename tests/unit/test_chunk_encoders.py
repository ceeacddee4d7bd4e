"""The Rust fast path (native/fastlog) must produce exactly the Python reference's bytes.

Adversarial lines (tests/data/edge_lines.jsonl: duplicate keys, escapes, lone surrogates, deep
nesting, huge numbers, exotic timestamps, invalid UTF-8, blank and over-long lines) and
generated realistic ones, under several line limits, both long_lines actions and with a tail
without newline. Generated lines over every JSON token (valid and not, kept and skipped, nested
to orjson's limit) check the native JSON scanner against the reference. (Its kept values are
checked against the former serde_json parser in Rust: `cargo test --features reference`.)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tether.agent.chunks import EncodedChunk, NativeChunkEncoder, PythonChunkEncoder
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import (
    ATTR_FILE_FINGERPRINT,
    ATTR_FILE_PATH,
    ATTR_INVALID_UTF8,
    ATTR_KEYS_MOVED,
    ATTR_RECORD_OFFSET,
    ATTR_TRUNCATED,
)

EDGE_LINES = (Path(__file__).resolve().parents[1] / "data" / "edge_lines.jsonl").read_bytes()


def _realistic(count: int) -> bytes:
    rng = random.Random(1234)
    out = []
    for n in range(count):
        style = n % 4
        trace, span = rng.randbytes(16).hex(), rng.randbytes(8).hex()
        line: dict[str, Any]
        if style == 0:
            line = {
                "@timestamp": f"2026-11-21T10:00:{n % 60:02d}.{n:06d}Z",
                "level": "info",
                "service": "checkout",
                "trace_id": trace,
                "span_id": span,
                "message": f"m {n}",
                "data": {"n": n},
            }
        elif style == 1:
            line = {
                "@timestamp": 1_763_700_000 + n / 1000,
                "log.level": "WARN",
                "trace.id": trace,
                "span.id": span,
                "service.name": "payments",
                "message": "ecs",
            }
        elif style == 2:
            line = {
                "time": 1_763_700_000_000 + n,
                "severityText": "error",
                "traceId": trace,
                "spanId": span,
                "body": "otel",
                "service": {"name": "cart"},
            }
        else:
            line = {"ts": "2026-11-21T10:00:00+05:30", "lvl": "debug", "msg": "no trace here"}
        out.append(orjson.dumps(line))
    out.insert(7, b"not json at all")
    out.insert(11, b'{"msg": "bad utf8 \xff\xfe"}')
    return b"\n".join(out) + b"\n"


LongLines = Literal["truncate", "drop"]


def _encoders(
    max_line: int, long_lines: LongLines, move_routing_keys: bool = True
) -> tuple[PythonChunkEncoder, NativeChunkEncoder]:
    """Both encoders; routing keys leave the bodies unless told otherwise, as by default."""
    common: dict[str, Any] = {
        "agent_id": "agent-7",
        "partitions": 8,
        "mapping": default_mapping(),
        "max_line_bytes": max_line,
        "long_lines": long_lines,
        "move_routing_keys": move_routing_keys,
    }
    return PythonChunkEncoder(**common), NativeChunkEncoder(**common)


def _both(
    data: bytes, max_line: int, long_lines: LongLines = "truncate", move_routing_keys: bool = True
) -> tuple[EncodedChunk, EncodedChunk]:
    reference, native = _encoders(max_line, long_lines, move_routing_keys)
    arguments = {
        "fingerprint": "0123456789abcdef",
        "path": "/var/log/app.log",
        "untraced_partition": 5,
        "observed_ns": 1_763_700_000_123_456_789,
    }
    return reference.encode(data, 4096, **arguments), native.encode(data, 4096, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_line", [262_144, 384, 64])
@pytest.mark.parametrize("source", ["edge", "realistic"])
@pytest.mark.parametrize("long_lines", ["truncate", "drop"])
@pytest.mark.parametrize("move_routing_keys", [True, False])
def test_native_bytes_equal_reference(
    source: str, max_line: int, long_lines: LongLines, move_routing_keys: bool
) -> None:
    data = EDGE_LINES if source == "edge" else _realistic(3000)
    reference, native = _both(data, max_line, long_lines, move_routing_keys)
    assert reference.lines > 0
    if max_line == 64:  # over-long lines are there, cut or left out
        assert reference.truncated > 0
    assert (native.lines, native.parse_errors, native.truncated, native.invalid_utf8) == (
        reference.lines,
        reference.parse_errors,
        reference.truncated,
        reference.invalid_utf8,
    )
    assert native.records.keys() == reference.records.keys()
    for partition, value in reference.records.items():
        assert native.records[partition] == value, f"partition {partition} differs"


@pytest.mark.parametrize("max_line", [262_144, 64])
@pytest.mark.parametrize("long_lines", ["truncate", "drop"])
def test_records_carry_the_offsets_of_their_lines_and_the_scope_the_file(
    max_line: int, long_lines: LongLines
) -> None:
    """The collector makes record ids of these offsets: each must be where its line starts (a wrong
    one would still be unique, and silently break replay deduplication across agent versions)."""
    data = EDGE_LINES + b"\r\n  \n" + _realistic(50)
    reference, native = _both(data, max_line, long_lines)
    assert native.records == reference.records
    base, seen = 4096, []
    for value in native.records.values():
        for resource_logs in ExportLogsServiceRequest.FromString(value).resource_logs:
            [scope_logs] = resource_logs.scope_logs
            scope = {kv.key: kv.value.string_value for kv in scope_logs.scope.attributes}
            assert scope == {ATTR_FILE_PATH: "/var/log/app.log", ATTR_FILE_FINGERPRINT: "0123456789abcdef"}
            for record in scope_logs.log_records:
                offset, *flags = record.attributes
                assert offset.key == ATTR_RECORD_OFFSET and offset.value.WhichOneof("value") == "int_value"
                at = offset.value.int_value - base
                assert at == 0 or data[at - 1 : at] == b"\n"
                keys = {f.key for f in flags}
                line = data[at:].split(b"\n", 1)[0].rstrip(b"\r")
                if ATTR_KEYS_MOVED in keys:  # the line's members but the moved ones, in order
                    kept = orjson.loads(record.body.string_value).items()
                    assert [item for item in orjson.loads(line).items() if item in kept] == list(kept)
                elif not keys & {ATTR_INVALID_UTF8, ATTR_TRUNCATED}:
                    assert line.startswith(record.body.string_value.encode())
                seen.append(at)
    assert len(seen) == native.lines == len(set(seen))


@pytest.mark.parametrize(
    "tail", [b'{"level":"info","message":"partial, shipped after its timeout"}', b'{"message":"' + b"z" * 500]
)
@pytest.mark.parametrize("long_lines", ["truncate", "drop"])
def test_tail_without_newline_is_treated_alike(tail: bytes, long_lines: LongLines) -> None:
    reference, native = _both(b'{"level":"info"}\n' + tail, 384, long_lines)
    assert reference.records == native.records
    assert (native.lines, native.truncated) == (reference.lines, reference.truncated)
    assert native.truncated == (1 if len(tail) >= 384 else 0)


@pytest.mark.parametrize("long_lines", ["truncate", "drop"])
def test_over_long_lines_are_cut_or_left_out_and_counted_alike(long_lines: LongLines) -> None:
    """Over-long lines of every kind (JSON, not JSON, blank, with \\r, exactly at the limit)
    between short ones: the same records and counts under either action."""
    long_json = orjson.dumps({"level": "warn", "message": "y" * 200, "trace_id": "ab" * 16})
    lines = [
        b'{"level":"info","msg":"a"}',
        long_json,
        b"not json " * 30,
        b"x" * 127 + b"\r",
        b"z" * 128,
        b"z" * 129,
        b'{"level":"error","msg":"b"}',
    ]
    if long_lines == "drop":
        # A blank over-long line: under truncate the native path skips it without counting it
        # (the reference counts it), a known difference of the metric left to its own change.
        lines.insert(3, b" " * 200)
    reference, native = _both(b"\n".join(lines) + b"\n", 128, long_lines)
    assert reference.truncated == (4 if long_lines == "drop" else 3)
    assert reference.lines == (4 if long_lines == "drop" else 7)
    assert (native.lines, native.parse_errors, native.truncated, native.invalid_utf8) == (
        reference.lines,
        reference.parse_errors,
        reference.truncated,
        reference.invalid_utf8,
    )
    assert native.records == reference.records


def test_ids_with_every_ascii_character_agree() -> None:
    """Hex digits of either case, their neighbours in ASCII ('/', ':', '@', 'G', '`', 'g'),
    all-zero ids and wrong lengths: the native id decoder accepts exactly what the reference does."""
    rng = random.Random(99)
    lines = []
    for code in range(32, 127):
        for length in (32, 16):
            digits = list(rng.randbytes(length // 2).hex())
            digits[rng.randrange(length)] = chr(code)
            ident = "".join(digits)
            key = "trace_id" if length == 32 else "span_id"
            lines.append(orjson.dumps({key: ident, "message": code}))
            lines.append(orjson.dumps({key: ident.upper(), "message": code}))
    for trace, span in (("0" * 32, "0" * 16), ("0" * 31 + "1", "0" * 15 + "1"), ("ab" * 15, "ab" * 7 + "a")):
        lines.append(orjson.dumps({"trace_id": trace, "span_id": span}))
    reference, native = _both(b"\n".join(lines) + b"\n", 262_144)
    assert reference.lines == len(lines)
    assert len(reference.records) > 1  # valid ids spread over partitions
    assert native.records == reference.records


_SIGNIFICANT = b'{}[]":,\\ \t\r0123456789eE+-.tfnulr/\x00\x1f\x7f'


def _mutate(line: bytes, rng: random.Random) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(data) + 1)
        choice = rng.random()
        byte = rng.choice(_SIGNIFICANT) if rng.random() < 0.8 else rng.randrange(256)
        if choice < 0.35 and at < len(data):
            data[at] = byte
        elif choice < 0.6:
            data.insert(at, byte)
        elif choice < 0.85 and at < len(data):
            del data[at]
        else:  # repeat a piece: duplicate keys, nested braces, doubled escapes
            end = min(len(data), at + rng.randrange(1, 12))
            data[at:at] = data[at:end]
    return bytes(data).replace(b"\n", b" ")


@pytest.mark.parametrize("seed", range(4))
def test_mutated_lines_agree(seed: int) -> None:
    """Byte mutations of edge and realistic lines (mostly invalid JSON, some still valid): the
    native encoder flags, extracts and encodes exactly like the reference."""
    rng = random.Random(seed)
    sources = [line for line in EDGE_LINES.split(b"\n") if line] + _realistic(400).split(b"\n")[:-1]
    lines = [_mutate(rng.choice(sources), rng) for _ in range(1500)]
    reference, native = _both(b"\n".join(lines) + b"\n", 262_144)
    assert reference.parse_errors > 100  # the mutations do break lines...
    assert reference.lines - reference.parse_errors > 100  # ...and leave others valid
    assert (native.lines, native.parse_errors, native.invalid_utf8) == (
        reference.lines,
        reference.parse_errors,
        reference.invalid_utf8,
    )
    assert native.records == reference.records


@pytest.mark.parametrize(
    "number",
    [
        b"1e400",
        b"-1e400",
        b"1.8e308",
        b"1" + b"0" * 400,
        b"1.7976931348623157e308",
        b"1e-400",
        b"123456789012345678901234567890",
        b"-0.0",
        b"0.5e+3",
        b"1E2",
        b"9" * 16,
        b"9" * 15,
    ],
)
def test_numbers_the_reference_refuses_as_infinite_are_refused_everywhere(number: bytes) -> None:
    """orjson refuses a number that is infinite as a double, wherever it is (a skipped value, an
    array, an object under a kept key, behind an escaped key that the fast scanner leaves alone)."""
    templates = [
        b'{"level":"info","x":%s}',
        b'{"x":[1,%s]}',
        b'{"level":%s}',
        b'{"level":[%s]}',
        b'{"service":{"name":"a","n":%s}}',
        b'{"k\\u0065y":%s,"level":"info"}',
        b'{"a":{"b":[{"c":%s}]},"trace_id":"%s"}',
    ]
    lines = [t % (number, b"ab" * 16) if t.count(b"%s") == 2 else t % number for t in templates]
    reference, native = _both(b"\n".join(lines) + b"\n", 262_144)
    assert reference.lines == len(lines)
    assert (native.parse_errors, native.records) == (reference.parse_errors, reference.records)


# Differential test of the native JSON scanner (native/fastlog/src/json_scan.rs): generated lines
# over every JSON token, valid and not, under kept (alias) and skipped keys.

_MAPPING = default_mapping()
_ALIAS_NAMES = _MAPPING.timestamp + _MAPPING.level + _MAPPING.trace_id + _MAPPING.span_id + _MAPPING.service
# The keys the scanner keeps: every alias name and the root of each dotted one.
_KEPT_KEYS = list(dict.fromkeys([*_ALIAS_NAMES, *(name.split(".")[0] for name in _ALIAS_NAMES)]))
_OTHER_KEYS = [b"message", b"data", b"x", b"", b"Level", b"levels", b"name", b"id", b"\xc3\xa9"]
# key spellings with escapes: the scanner decodes them before the lookup
_ESCAPED_KEYS = [b"lev\\u0065l", b"trace\\u005fid", b"serv\\u0069ce", b"\\u0074s", b'a\\"b', b"\\/x"]
_STRING_PIECES = [
    b"abc",
    b"info",
    b"ERROR",
    b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
    b"2026-11-21T10:00:00.123456789Z",
    b"2026-11-21 10:00:00+05:30",
    b"1763700000.5",
    b"0af7651916cd43dd8448eb211c80319c",
    b"b7ad6b7169203331",
    b"\\n",
    b'\\"',
    b"\\\\",
    b"\\/",
    b"\\b\\f\\r\\t",
    b"\\u00e9",
    b"\\u0000",
    b"\\u001F",
    b"\\ud83d\\ude00",
    b"\\uD83D\\uDE00",
    b"\\udbff\\udfff",
    b"\x7f",  # not a control character for JSON
    b"x" * 40,
]
_BAD_STRING_PIECES = [
    b"\\ud800",  # lone high surrogate
    b"\\udc00",  # lone low surrogate
    b"\\ud800\\u0041",  # high surrogate, then not a low one
    b"\\ud800\\ud800",
    b"\\x",  # not an escape
    b"\\u12",
    b"\\u12G4",
    b"\\",
    b"\x01",  # raw control characters
    b"\x1f",
    b"\t",
]
_NUMBERS = [
    b"0",
    b"-0",
    b"7",
    b"-7",
    b"1763700000",
    b"1763700000123",
    b"1763700000123456789",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"-18446744073709551616",
    b"123456789012345678901234567890",
    b"1" + b"0" * 308,  # 1e308: finite
    b"0.5",
    b"-0.0",
    b"1763700000.123456",
    b"1.5e3",
    b"1E2",
    b"2e-3",
    b"1e308",
    b"1e-400",
    b"1.7976931348623157e308",
    b"1.7976931348623158e308",  # rounds down to the largest double
    b"0e999999999",
    b"0." + b"0" * 400 + b"1",
]
_BAD_NUMBERS = [
    b"1" + b"0" * 309,  # 1e309: infinite as a double
    b"-" + b"9" * 309,
    b"1e309",
    b"-1e400",
    b"1.7976931348623159e308",  # rounds up to infinity
    b"01",
    b"-01",
    b"00",
    b"-",
    b".5",
    b"1.",
    b"1.e5",
    b"1e",
    b"1e+",
    b"+1",
    b"--1",
    b"0x10",
    b"NaN",
    b"Infinity",
    b"-Infinity",
]
_LITERALS = [b"true", b"false", b"null"]
_BAD_LITERALS = [b"tru", b"nul", b"True", b"None", b"nulll", b"fals"]
_SPACES = [b" ", b"\t", b"\r", b" \t\r "]
_BAD_SPACES = [b"\x0b", b"\x0c", b"\xc2\xa0"]  # not JSON whitespace
_GARBAGE = [b"x", b"}", b"]", b",", b"\x00", b" {}", b"\x0c", b"//", b'"']


# each token is one that orjson refuses with this probability: about half the lines stay valid
_BAD = 0.012


def _pick(rng: random.Random, good: list[bytes], bad: list[bytes]) -> bytes:
    return rng.choice(bad) if rng.random() < _BAD else rng.choice(good)


def _space(rng: random.Random) -> bytes:
    return _pick(rng, _SPACES, _BAD_SPACES) if rng.random() < 0.2 else b""


def _string(rng: random.Random) -> bytes:
    pieces = [_pick(rng, _STRING_PIECES, _BAD_STRING_PIECES) for _ in range(rng.choice((0, 1, 1, 2, 3)))]
    return b'"' + b"".join(pieces) + b'"'


def _key(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.55:
        return b'"' + rng.choice(_KEPT_KEYS).encode() + b'"'
    if r < 0.8:
        return b'"' + rng.choice(_OTHER_KEYS) + b'"'
    if r < 0.99:
        return b'"' + rng.choice(_ESCAPED_KEYS) + b'"'
    return rng.choice((b"1", b"null", b"key"))  # not a string key


def _value(rng: random.Random, depth: int) -> bytes:
    r = rng.random()
    if r < 0.12 and depth < 5:
        items = [
            _key(rng) + _space(rng) + b":" + _space(rng) + _value(rng, depth + 1)
            for _ in range(rng.randrange(4))
        ]
        return b"{" + _space(rng) + (b"," + _space(rng)).join(items) + _space(rng) + b"}"
    if r < 0.22 and depth < 5:
        items = [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
        return b"[" + _space(rng) + (_space(rng) + b"," + _space(rng)).join(items) + _space(rng) + b"]"
    if r < 0.6:
        return _string(rng)
    if r < 0.85:
        return _pick(rng, _NUMBERS, _BAD_NUMBERS)
    return _pick(rng, _LITERALS, _BAD_LITERALS)


def _nested(rng: random.Random, levels: int) -> bytes:
    """`levels` containers, arrays and objects mixed, around a scalar."""
    opening, closing = [], []
    for _ in range(levels):
        if rng.random() < 0.5:
            opening.append(b"[")
            closing.append(b"]")
        else:
            opening.append(b'{"' + rng.choice((b"a", b"name", b"id", b"level")) + b'":')
            closing.append(b"}")
    return (
        b"".join(opening)
        + rng.choice((b"1", b'"s"', b"[]", b"{}", b"1e400", b'"\\ud800"'))
        + b"".join(reversed(closing))
    )


def _json_line(rng: random.Random) -> bytes:
    if rng.random() < 0.04:  # near orjson's nesting limit (1024, the line's object included)
        key = b'"' + rng.choice((*(k.encode() for k in _KEPT_KEYS[:12]), b"data", b"x")) + b'"'
        inner = _nested(rng, rng.choice((1021, 1022, 1023, 1024, 1025)))
        return b'{"level":"info",' + key + b":" + inner + b',"span_id":"b7ad6b7169203331"}'
    r = rng.random()
    if r < 0.05:  # not an object
        return _value(rng, 1)
    fields = [
        _space(rng) + _key(rng) + _space(rng) + b":" + _space(rng) + _value(rng, 1) + _space(rng)
        for _ in range(rng.randrange(8))
    ]
    if rng.random() < 0.1:  # a kept key twice: the last one counts
        fields.append(rng.choice(fields) if fields else b'"level":"a"')
    line = _space(rng) + b"{" + b",".join(fields) + b"}" + _space(rng)
    r = rng.random()
    if r < 0.05:
        line += rng.choice(_GARBAGE)
    elif r < 0.1:
        line = line[: rng.randrange(len(line) + 1)]  # truncated
    elif r < 0.15:
        line = b"{" + b",".join(fields) + b",}"  # trailing comma
    return line.replace(b"\n", b" ")


def _json_lines(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        line = _json_line(rng)
        lines.append(_mutate(line, rng) if rng.random() < 0.2 and line else line)
    return [line for line in lines if line.strip(b" \t\r\x0b\x0c")]


@pytest.mark.parametrize("seed", range(4))
def test_generated_json_lines_agree(seed: int) -> None:
    """Every JSON token, valid and not, kept and skipped: the native scanner refuses exactly what
    orjson refuses and extracts what the reference extracts, byte for byte."""
    lines = _json_lines(seed, 2500)
    reference, native = _both(b"\n".join(lines) + b"\n", 262_144)
    assert reference.lines == len(lines)
    assert 0.2 * len(lines) < reference.parse_errors < 0.8 * len(lines)  # both kinds well covered
    assert (native.lines, native.parse_errors, native.invalid_utf8) == (
        reference.lines,
        reference.parse_errors,
        reference.invalid_utf8,
    )
    for partition, value in reference.records.items():
        assert native.records.get(partition) == value, f"partition {partition} differs"
    assert native.records.keys() == reference.records.keys()


def test_json_line_generator_covers_refusals_and_kept_values() -> None:
    """The differential tests above are only as good as their lines: each kind of refusal and
    every kind of kept value must occur, accepted and refused."""
    lines = _json_lines(0, 2500)
    text = b"\n".join(lines)
    for needle in (b"\\ud800", b"1e400", b"\x01", b"\\u12G4", b"01", b"NaN", b"\x0c", b"\\u0065", b"[[[["):
        assert needle in text, needle
    accepted = refused = 0
    for line in lines:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            refused += 1
            continue
        accepted += isinstance(value, dict)
    assert accepted > 500 and refused > 500
