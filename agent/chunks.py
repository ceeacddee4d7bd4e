"""Encoding a chunk of a file's complete lines into per-partition Kafka records.

Two implementations of one contract: `PythonChunkEncoder` is the reference (agent/parse.py +
agent/encode.py), `NativeChunkEncoder` the Rust fast path (native/fastlog, ~20x faster), which
must produce the very same bytes (tests/unit/test_chunk_encoders.py). The file source takes the
native one when it is installed and can honour the configuration.

Line rules, shared: split on \\n; strip a trailing \\r; skip blank lines; a line longer than
max_line_bytes is cut there and flagged; a last piece without newline is a line of its own,
flagged truncated when it is at least max_line_bytes long (the head of an over-long line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

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


class ChunkEncoder(Protocol):
    name: str

    def encode(
        self,
        data: bytes,
        base_offset: int,
        *,
        fingerprint: str,
        path: str,
        untraced_partition: int,
        observed_ns: int,
    ) -> EncodedChunk: ...


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
    ) -> None:
        self.agent_id = agent_id
        self.partitions = partitions
        self.mapping = mapping
        self.max_line_bytes = max_line_bytes
        self.long_lines = long_lines

    def encode(
        self,
        data: bytes,
        base_offset: int,
        *,
        fingerprint: str,
        path: str,
        untraced_partition: int,
        observed_ns: int,
    ) -> EncodedChunk:
        lines: list[FileLine] = []
        parse_errors = truncated_count = invalid = 0
        limit = self.max_line_bytes
        pieces = data.split(b"\n")
        tail = pieces.pop()
        offset = base_offset
        entries = [(raw, False) for raw in pieces] + ([(tail, True)] if tail else [])
        for raw, is_tail in entries:
            start, offset = offset, offset + len(raw) + 1
            truncated = len(raw) > limit or (is_tail and len(raw) >= limit)
            if truncated:
                truncated_count += 1
                if self.long_lines == "drop":
                    continue
                raw = raw[:limit]
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            parsed = parse_line(raw, self.mapping, truncated=truncated)
            parse_errors += parsed.parse_error
            invalid += parsed.invalid_utf8
            lines.append(FileLine(parsed, start))
        records = (
            encode_file_lines(
                lines,
                path=path,
                fingerprint=fingerprint,
                agent_id=self.agent_id,
                observed_ns=observed_ns,
                partitions=self.partitions,
                untraced_partition=untraced_partition,
            )
            if lines
            else {}
        )
        return EncodedChunk(records, len(lines), parse_errors, truncated_count, invalid)


class NativeChunkEncoder:
    name = "native"

    def __init__(
        self, *, agent_id: str, partitions: int, mapping: LogFieldMapping, max_line_bytes: int
    ) -> None:
        import tether_fastlog

        self._encode_chunk: Any = tether_fastlog.encode_chunk
        self.agent_id = agent_id
        self.partitions = partitions
        self.max_line_bytes = max_line_bytes
        self._aliases = [
            list(mapping.timestamp),
            list(mapping.level),
            list(mapping.trace_id),
            list(mapping.span_id),
            list(mapping.service),
        ]
        self._severity = dict(mapping.severity)

    def encode(
        self,
        data: bytes,
        base_offset: int,
        *,
        fingerprint: str,
        path: str,
        untraced_partition: int,
        observed_ns: int,
    ) -> EncodedChunk:
        records, lines, parse_errors, truncated, invalid = self._encode_chunk(
            data,
            base_offset,
            self._aliases,
            self._severity,
            self.partitions,
            untraced_partition,
            self.agent_id,
            fingerprint,
            path,
            observed_ns,
            self.max_line_bytes,
            parse_timestamp,
        )
        return EncodedChunk(dict(records), lines, parse_errors, truncated, invalid)


def native_available() -> bool:
    try:
        import tether_fastlog  # noqa: F401
    except ImportError:
        return False
    return True


def chunk_encoder(
    *,
    agent_id: str,
    partitions: int,
    mapping: LogFieldMapping,
    max_line_bytes: int,
    long_lines: Literal["truncate", "drop"],
) -> ChunkEncoder:
    """The native encoder when installed and able to honour the configuration, else the reference."""
    if long_lines == "truncate" and native_available():
        return NativeChunkEncoder(
            agent_id=agent_id, partitions=partitions, mapping=mapping, max_line_bytes=max_line_bytes
        )
    return PythonChunkEncoder(
        agent_id=agent_id,
        partitions=partitions,
        mapping=mapping,
        max_line_bytes=max_line_bytes,
        long_lines=long_lines,
    )
