"""The file source: tails JSON log files and ships complete lines, checkpointing after Kafka acks.

Each file is identified by a fingerprint of its first line (at most `fingerprint_bytes`), not
its inode, so a renamed file keeps its checkpoint and a new file at an old path starts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import logging
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from agent.checkpoint import Checkpoints
from agent.config import FileSourceConfig
from agent.encode import FileLine, UntracedSpreader, encode_file_lines
from agent.parse import parse_line
from agent.sinks.kafka import KafkaSink
from schemas.log_fields import LogFieldMapping
from schemas.records import record_id

log = logging.getLogger("tether.agent.file")


@dataclass
class TrackedFile:
    path: Path
    fingerprint: str
    offset: int
    discarding: bool = False  # inside an over-long line: skip to its newline
    stats: dict[str, int] = field(default_factory=lambda: {"lines": 0, "parse_errors": 0, "truncated": 0})


class FileSource:
    def __init__(
        self,
        config: FileSourceConfig,
        *,
        agent_id: str,
        checkpoints: Checkpoints,
        sink: KafkaSink,
        mapping: LogFieldMapping,
    ) -> None:
        self.config = config
        self.agent_id = agent_id
        self.checkpoints = checkpoints
        self.sink = sink
        self.mapping = mapping
        self.files: dict[Path, TrackedFile] = {}
        self._spreader = UntracedSpreader()

    async def run(self, stop: asyncio.Event) -> None:
        first_scan = True
        while not stop.is_set():
            for path in self._discover():
                tracked = self._track(path, first_scan)
                if tracked is not None:
                    await self._drain(tracked, stop)
            first_scan = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.poll_interval_seconds)

    def _discover(self) -> list[Path]:
        found = {Path(p) for pattern in self.config.include for p in glob.glob(pattern, recursive=True)}
        return sorted(
            p for p in found if p.is_file() and not any(fnmatch(str(p), x) for x in self.config.exclude)
        )

    def fingerprint(self, path: Path) -> str | None:
        """Digest of the first line (capped); None while the file has no complete first line yet."""
        with path.open("rb") as handle:
            head = handle.read(self.config.fingerprint_bytes)
        newline = head.find(b"\n")
        if newline < 0 and len(head) < self.config.fingerprint_bytes:
            return None
        first = head if newline < 0 else head[: newline + 1]
        return hashlib.blake2b(first, digest_size=8).hexdigest()

    def _track(self, path: Path, first_scan: bool) -> TrackedFile | None:
        try:
            fingerprint = self.fingerprint(path)
            size = path.stat().st_size
        except OSError:
            self.files.pop(path, None)
            return None
        if fingerprint is None:
            return None
        tracked = self.files.get(path)
        if tracked is None or tracked.fingerprint != fingerprint:
            saved = self.checkpoints.offset(fingerprint)
            start = (
                saved if saved is not None else (size if first_scan and self.config.start_at == "end" else 0)
            )
            tracked = TrackedFile(path, fingerprint, start)
            self.files[path] = tracked
            log.info("tailing file", extra={"log.file.path": str(path), "offset": start})
        if size < tracked.offset:
            log.warning(
                "file truncated; reading it again from the start",
                extra={"log.file.path": str(path), "offset": tracked.offset, "size": size},
            )
            tracked.offset = 0
        return tracked

    async def _drain(self, tracked: TrackedFile, stop: asyncio.Event) -> None:
        """Ship every complete line after the checkpoint, one acknowledged chunk at a time."""
        while not stop.is_set():
            try:
                with tracked.path.open("rb") as handle:
                    handle.seek(tracked.offset)
                    chunk = handle.read(self.config.read_chunk_bytes)
            except OSError:
                return
            end = chunk.rfind(b"\n") + 1
            if end == 0:
                if len(chunk) < self.config.max_line_bytes:
                    return  # a partial last line waits for its newline
                end = len(chunk)  # an over-long line: ship its head, skip the rest
            await self._ship(tracked, chunk[:end])
            if end < self.config.read_chunk_bytes and len(chunk) < self.config.read_chunk_bytes:
                return

    async def _ship(self, tracked: TrackedFile, data: bytes) -> None:
        lines: list[FileLine] = []
        limit = self.config.max_line_bytes
        pieces = data.split(b"\n")
        # b"" when data ends with a newline; otherwise the head of a line longer than max_line_bytes.
        overlong_head = pieces.pop()
        offset = tracked.offset
        for raw in pieces:
            start, offset = offset, offset + len(raw) + 1
            if tracked.discarding:
                tracked.discarding = False  # the end of an over-long line whose head was shipped
                continue
            self._add_line(lines, tracked, raw, start, limit)
        if overlong_head:
            if not tracked.discarding:
                self._add_line(lines, tracked, overlong_head, offset, limit)
            tracked.discarding = True
        if lines:
            partitions = self.sink.partitions
            records = encode_file_lines(
                lines,
                path=str(tracked.path),
                agent_id=self.agent_id,
                observed_ns=time.time_ns(),
                partitions=partitions,
                untraced_partition=self._spreader.next_partition(partitions),
            )
            await self.sink.send_logs(records)
            tracked.stats["lines"] += len(lines)
        # Only now, with every record acknowledged, may a restart skip these bytes.
        tracked.offset += len(data)
        self.checkpoints.advance(tracked.fingerprint, str(tracked.path), tracked.offset)

    def _add_line(
        self, lines: list[FileLine], tracked: TrackedFile, raw: bytes, start: int, limit: int
    ) -> None:
        if len(raw) > limit:
            raw = raw[:limit]
            tracked.stats["truncated"] += 1
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            return
        parsed = parse_line(raw, self.mapping)
        tracked.stats["parse_errors"] += parsed.parse_error
        lines.append(FileLine(parsed, record_id(self.agent_id, tracked.fingerprint, start)))
