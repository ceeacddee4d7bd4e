"""The Rust fast path (native/fastlog) must produce exactly the Python reference's bytes.

Adversarial lines (tests/data/edge_lines.jsonl: duplicate keys, escapes, lone surrogates, deep
nesting, huge numbers, exotic timestamps, invalid UTF-8, blank and over-long lines) and
generated realistic ones, under several line limits and with a tail without newline.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.chunks import EncodedChunk, NativeChunkEncoder, PythonChunkEncoder
from schemas.log_fields import default_mapping

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


def _encoders(max_line: int) -> tuple[PythonChunkEncoder, NativeChunkEncoder]:
    common = {
        "agent_id": "agent-7",
        "partitions": 8,
        "mapping": default_mapping(),
        "max_line_bytes": max_line,
    }
    return PythonChunkEncoder(**common), NativeChunkEncoder(**common)  # type: ignore[arg-type]


def _both(data: bytes, max_line: int) -> tuple[EncodedChunk, EncodedChunk]:
    reference, native = _encoders(max_line)
    arguments = {
        "fingerprint": "0123456789abcdef",
        "path": "/var/log/app.log",
        "untraced_partition": 5,
        "observed_ns": 1_763_700_000_123_456_789,
    }
    return reference.encode(data, 4096, **arguments), native.encode(data, 4096, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_line", [262_144, 384, 64])
@pytest.mark.parametrize("source", ["edge", "realistic"])
def test_native_bytes_equal_reference(source: str, max_line: int) -> None:
    data = EDGE_LINES if source == "edge" else _realistic(3000)
    reference, native = _both(data, max_line)
    assert reference.lines > 0
    assert (native.lines, native.parse_errors, native.truncated, native.invalid_utf8) == (
        reference.lines,
        reference.parse_errors,
        reference.truncated,
        reference.invalid_utf8,
    )
    assert native.records.keys() == reference.records.keys()
    for partition, value in reference.records.items():
        assert native.records[partition] == value, f"partition {partition} differs"


@pytest.mark.parametrize(
    "tail", [b'{"level":"info","message":"partial, shipped after its timeout"}', b'{"message":"' + b"z" * 500]
)
def test_tail_without_newline_is_treated_alike(tail: bytes) -> None:
    reference, native = _both(b'{"level":"info"}\n' + tail, 384)
    assert reference.records == native.records
    assert native.truncated == (1 if len(tail) >= 384 else 0)


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
