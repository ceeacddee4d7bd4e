"""Routing keys leave the body (agent/body_keys.py) without changing a single document.

The contract: for any lines, the collector's documents of the records encoded with the keys moved
are exactly the documents of the records encoded with the lines whole, on both collector paths
(the Python reference and the native one). The lines are the adversarial edge lines, generated
and mutated JSON, realistic lines, and the corpus written by running each logging library.
Which lines keep their keys, and why, is checked rule by rule below.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import cramjam
import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.unit import test_chunk_encoders as chunk_cases
from tests.unit import test_collector_native_documents as native_docs_cases
from tether.agent.body_keys import BodyKeys, top_level_members, without_members
from tether.agent.chunks import EncodedChunk, NativeChunkEncoder, PythonChunkEncoder
from tether.agent.parse import parse_line
from tether.collector.documents import log_documents, native_log_documents
from tether.schemas.log_fields import LogFieldMapping, default_mapping
from tether.schemas.records import ATTR_KEYS_MOVED

LOGGERS = Path(__file__).resolve().parents[1] / "data" / "loggers"
TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _encode(data: bytes, move: bool, encoder: type[PythonChunkEncoder | NativeChunkEncoder]) -> EncodedChunk:
    return encoder(
        agent_id="agent-7",
        partitions=4,
        mapping=default_mapping(),
        max_line_bytes=262_144,
        move_routing_keys=move,
    ).encode(
        data,
        0,
        fingerprint="0123456789abcdef",
        path="/var/log/app.log",
        untraced_partition=1,
        observed_ns=1_763_700_000_123_456_789,
    )


def _documents(chunk: EncodedChunk, native: bool) -> list[tuple[Any, ...]]:
    """What Elasticsearch receives for the chunk's records, through one collector path."""
    mapping = default_mapping()
    docs = []
    for partition in sorted(chunk.records):
        value = chunk.records[partition]
        built = native_log_documents(value, mapping) if native else None
        if built is None:
            built = log_documents(ExportLogsServiceRequest.FromString(value), mapping)
        docs += built
    return sorted(native_docs_cases.indexed(docs, None), key=repr)


def _moved(chunk: EncodedChunk) -> int:
    return sum(
        any(kv.key == ATTR_KEYS_MOVED for kv in record.attributes)
        for value in chunk.records.values()
        for resource_logs in ExportLogsServiceRequest.FromString(value).resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    )


def _sources() -> dict[str, bytes]:
    corpus = b"".join(p.read_bytes() for p in sorted(LOGGERS.glob("*.jsonl")) if ".expected." not in p.name)
    rng = random.Random(7)
    generated = chunk_cases._json_lines(3, 2000)
    realistic = chunk_cases._realistic(2000).split(b"\n")
    mutated = [chunk_cases._mutate(rng.choice(realistic[:-1]), rng) for _ in range(800)]
    return {
        "edge": chunk_cases.EDGE_LINES,
        "corpus": corpus,
        "generated": b"\n".join(generated) + b"\n",
        "realistic": b"\n".join(realistic),
        "mutated": b"\n".join(mutated) + b"\n",
    }


@pytest.mark.parametrize("source", ["edge", "corpus", "generated", "realistic", "mutated"])
@pytest.mark.parametrize("native_collector", [False, True])
def test_documents_are_the_same_with_the_keys_moved(source: str, native_collector: bool) -> None:
    data = _sources()[source]
    whole = _encode(data, False, PythonChunkEncoder)
    moved = _encode(data, True, PythonChunkEncoder)
    assert _encode(data, True, NativeChunkEncoder).records == moved.records
    assert _moved(whole) == 0 and _moved(moved) > 0
    assert _documents(moved, native_collector) == _documents(whole, native_collector)
    assert _documents(moved, native_collector) == _documents(whole, not native_collector)


def test_most_realistic_lines_move_and_their_bytes_shrink() -> None:
    data = _sources()["realistic"]
    whole, moved = _encode(data, False, NativeChunkEncoder), _encode(data, True, NativeChunkEncoder)
    assert _moved(moved) > 0.7 * moved.lines  # the "ts"/"lvl" style keeps its keys: not default names

    def compressed(chunk: EncodedChunk) -> int:
        return sum(len(cramjam.zstd.compress(value, level=-3)) for value in chunk.records.values())

    assert compressed(moved) < 0.8 * compressed(whole)


def _body(line: dict[str, Any] | bytes, mapping: LogFieldMapping | None = None) -> tuple[str, bool]:
    raw = line if isinstance(line, bytes) else orjson.dumps(line)
    mapping = mapping or default_mapping()
    parsed = parse_line(raw, mapping, body_keys=BodyKeys(mapping))
    return parsed.text, parsed.keys_moved


def test_the_routing_keys_leave_and_everything_else_stays_as_written() -> None:
    raw = (
        b'{ "@timestamp" : "2026-11-21T10:00:00.5Z", "level":"warn","message":"m",'
        b' "trace_id":"' + TRACE.encode() + b'", "span_id":"' + SPAN.encode() + b'",'
        b'"data":{"n": 1.50, "trace_id": "x"}, "service":"checkout" }'
    )
    assert _body(raw) == ('{ "message":"m","data":{"n": 1.50, "trace_id": "x"} }', True)


def test_duplicate_and_escaped_keys_leave_in_every_copy() -> None:
    raw = b'{"lev\\u0065l":"info","message":"m","level":"warn","x":1}'
    assert _body(raw) == ('{"message":"m","x":1}', True)


@pytest.mark.parametrize(
    "line",
    [
        {"message": "nested id", "span": {"trace_id": TRACE}},  # structlog: a nested path
        {"@mt": "User {level}", "level": "info"},  # a message template reads the line's keys
        {"message": "m", "trace_id": f"00-{TRACE}-{SPAN}-01"},  # a traceparent says more
        {"message": "m", "@timestamp": "yesterday"},  # a timestamp that does not parse
        {"message": "m", "level": ""},  # no level the record could carry
        {"message": "m", "trace_id": "0" * 32},  # no id
        {"message": "m", "service": None},
    ],
)
def test_lines_whose_record_would_not_carry_a_key_stay_whole(line: dict[str, Any]) -> None:
    assert _body(line) == (orjson.dumps(line).decode(), False)


def test_a_key_the_collector_reads_again_stays() -> None:
    """A deployment naming `level` a message name too: the collector would look it up again."""
    mapping = default_mapping().with_aliases({"message": ["level"]}, {})
    line = {"level": "info", "trace_id": TRACE}
    assert _body(line, mapping) == (orjson.dumps(line).decode(), False)


def test_members_are_found_through_strings_nesting_and_space() -> None:
    raw = b' {"a" : "x\\"}," , "b":[{"c":"]"}], "d" :-1.5e3 ,"e":{} }  '
    members = top_level_members(raw)
    assert [(key, raw[start:end]) for key, start, end in members] == [
        ("a", b'"a" : "x\\"},"'),
        ("b", b'"b":[{"c":"]"}]'),
        ("d", b'"d" :-1.5e3'),
        ("e", b'"e":{}'),
    ]
    # neighbours keep what is between them; across a moved member the pieces are joined by ","
    assert without_members(raw, {"a", "e"}) == b' {"b":[{"c":"]"}], "d" :-1.5e3 }  '
    assert without_members(raw, {"b"}) == b' {"a" : "x\\"},","d" :-1.5e3 ,"e":{} }  '
    assert without_members(b"{}", {"a"}) == b"{}"
    assert without_members(b'{"a":1}', {"a"}) == b"{}"
