"""Encoding a chunk of a file's complete lines into per-partition Kafka records.

Two implementations of one contract: `PythonChunkEncoder` is the reference (agent/parse.py +
agent/encode.py), `NativeChunkEncoder` the Rust fast path (native/fastlog, ~20x faster), which
must produce the very same bytes (tests/unit/test_chunk_encoders.py). The file source takes the
native one when tether.native finds it installed.

Line rules, shared: split on \\n; strip a trailing \\r; skip blank lines; a line longer than
max_line_bytes is cut there and flagged (with long_lines "drop": counted and left out); a last
piece without newline is a line of its own, flagged truncated when it is at least
max_line_bytes long (the head of an over-long line).

Container log files (log_format "cri" or "docker", agent/container_logs.py) are unwrapped first:
each record's joined content is then a line as above, with its stream and the runtime's time; a
record whose end is not in the chunk yet is left for the next one (`consumed`).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any, Literal, Protocol

from tether import native
from tether.agent.body_keys import BodyKeys
from tether.agent.container_logs import LogFormat, pod_container, unwrap
from tether.agent.encode import FileLine, encode_file_lines
from tether.agent.parse import parse_line, parse_timestamp
from tether.schemas.log_fields import LogFieldMapping


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    records: dict[int, bytes]
    lines: int
    parse_errors: int
    truncated: int
    invalid_utf8: int
    # bytes of the chunk the records stand for: all of it but a container record still waiting
    # for its end, which is read again next time
    consumed: int
    # container streams inside a record whose head was shipped: their lines up to its end are
    # skipped (pass it to the next chunk's encode)
    skipping: int = 0


class ChunkEncoder(Protocol):
    name: str
    partitions: int  # may change between chunks (FileSource.use_partitions)

    def encode(
        self,
        data: bytes,
        base_offset: int,
        *,
        fingerprint: str,
        path: str,
        untraced_partition: int,
        observed_ns: int,
        log_format: LogFormat = "plain",
        skipping: int = 0,
        flush_before: int = 0,
    ) -> EncodedChunk:
        """`log_format`, `skipping` and `flush_before` (a container record starting before this
        file offset ships without its end) are of container log files only."""
        ...


class PythonChunkEncoder:
    name = "python"

    def __init__(
        self,
        *,
        agent_id: str,
        partitions: int,
        mapping: LogFieldMapping,
        max_line_bytes: int,
        long_lines: Literal["truncate", "drop"] = "truncate",
        move_routing_keys: bool = True,
    ) -> None:
        self.agent_id = agent_id
        self.partitions = partitions
        self.mapping = mapping
        self.max_line_bytes = max_line_bytes
        self.long_lines = long_lines
        self.body_keys = BodyKeys(mapping) if move_routing_keys else None

    def encode(
        self,
        data: bytes,
        base_offset: int,
        *,
        fingerprint: str,
        path: str,
        untraced_partition: int,
        observed_ns: int,
        log_format: LogFormat = "plain",
        skipping: int = 0,
        flush_before: int = 0,
    ) -> EncodedChunk:
        lines: list[FileLine] = []
        parse_errors = truncated_count = invalid = 0
        limit = self.max_line_bytes
        if log_format == "plain":
            units, consumed = _plain_lines(data, base_offset, limit), len(data)
        else:
            unwrapped = unwrap(data, base_offset, log_format, limit, skipping, flush_before)
            consumed, skipping = unwrapped.consumed, unwrapped.skipping
            units = [
                (r.content, r.offset, r.truncated, r.stream.decode(), r.time_text) for r in unwrapped.records
            ]
        for raw, start, truncated, stream, runtime_time in units:
            if truncated:
                truncated_count += 1
                if self.long_lines == "drop":
                    continue
                raw = raw[:limit]
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            parsed = parse_line(raw, self.mapping, truncated=truncated, body_keys=self.body_keys)
            parse_errors += parsed.parse_error
            invalid += parsed.invalid_utf8
            lines.append(FileLine(parsed, start, stream, runtime_time))
        records = (
            encode_file_lines(
                lines,
                path=path,
                fingerprint=fingerprint,
                agent_id=self.agent_id,
                observed_ns=observed_ns,
                partitions=self.partitions,
                untraced_partition=untraced_partition,
                pod=pod_container(path),
            )
            if lines
            else {}
        )
        return EncodedChunk(records, len(lines), parse_errors, truncated_count, invalid, consumed, skipping)


# A line to parse: its bytes (cut at max_line_bytes when truncated), its offset, whether it is
# truncated, and a container record's stream and runtime time ("", b"" for a plain line).
_Unit = tuple[bytes, int, bool, str, bytes]


def _plain_lines(data: bytes, base_offset: int, limit: int) -> list[_Unit]:
    pieces = data.split(b"\n")
    tail = pieces.pop()
    entries = [(raw, False) for raw in pieces] + ([(tail, True)] if tail else [])
    units, offset = [], base_offset
    for raw, is_tail in entries:
        truncated = len(raw) > limit or (is_tail and len(raw) >= limit)
        units.append((raw, offset, truncated, "", b""))
        offset += len(raw) + 1
    return units


class NativeChunkEncoder:
    name = "native"

    def __init__(
        self,
        *,
        agent_id: str,
        partitions: int,
        mapping: LogFieldMapping,
        max_line_bytes: int,
        long_lines: Literal["truncate", "drop"] = "truncate",
        move_routing_keys: bool = True,
    ) -> None:
        self._encode_chunk: Any = native.extension().encode_chunk
        self._move_routing_keys = move_routing_keys
        self.agent_id = agent_id
        self.partitions = partitions
        self.max_line_bytes = max_line_bytes
        self._mapping = native.field_mapping(mapping)
        self._drop_long_lines = long_lines == "drop"

    def encode(
        self,
        data: bytes,
        base_offset: int,
        *,
        fingerprint: str,
        path: str,
        untraced_partition: int,
        observed_ns: int,
        log_format: LogFormat = "plain",
        skipping: int = 0,
        flush_before: int = 0,
    ) -> EncodedChunk:
        pod = pod_container(path)
        records, lines, parse_errors, truncated, invalid, consumed, skipping = self._encode_chunk(
            data,
            base_offset,
            self._mapping,
            self.partitions,
            untraced_partition,
            self.agent_id,
            fingerprint,
            path,
            observed_ns,
            self.max_line_bytes,
            parse_timestamp,
            self._drop_long_lines,
            log_format,
            skipping,
            flush_before,
            None if pod is None else astuple(pod),
            self._move_routing_keys,
        )
        return EncodedChunk(dict(records), lines, parse_errors, truncated, invalid, consumed, skipping)


def chunk_encoder(
    *,
    agent_id: str,
    partitions: int,
    mapping: LogFieldMapping,
    max_line_bytes: int,
    long_lines: Literal["truncate", "drop"],
    move_routing_keys: bool = True,
) -> ChunkEncoder:
    """The native encoder when tether.native finds it installed, else the reference."""
    if native.choose("file_lines").native:
        return NativeChunkEncoder(
            agent_id=agent_id,
            partitions=partitions,
            mapping=mapping,
            max_line_bytes=max_line_bytes,
            long_lines=long_lines,
            move_routing_keys=move_routing_keys,
        )
    return PythonChunkEncoder(
        agent_id=agent_id,
        partitions=partitions,
        mapping=mapping,
        max_line_bytes=max_line_bytes,
        long_lines=long_lines,
        move_routing_keys=move_routing_keys,
    )
