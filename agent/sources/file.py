"""The file source: tails JSON log files, ships complete lines, checkpoints what Kafka acknowledged.

Identity. A tracked file is followed through its open descriptor: while we hold it, its inode
cannot be reused, so a rename (rotation by rename+create) is simply followed to EOF. On disk,
checkpoints are keyed by a fingerprint of the file's first line, so a restart finds its place
even though inodes changed. A new file whose fingerprint is already known (a copy, as made by
copytruncate) starts at the known offset; the lines both copies hold get the same record ids
(agent, fingerprint, offset), so the overlap is invisible downstream. A file that shrinks was
truncated: it is read again from 0 under its new fingerprint.

Acknowledgement. Chunks are submitted to delivery without waiting; each carries an ack future.
A file's checkpoint advances over the longest prefix of chunks Kafka acknowledged, and is
persisted every `checkpoint_interval_seconds` and at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from tether.agent.batch import Batch
from tether.agent.checkpoint import Checkpoints
from tether.agent.chunks import chunk_encoder
from tether.agent.config import FileSourceConfig
from tether.agent.delivery import Delivery
from tether.agent.encode import UntracedSpreader
from tether.agent.metrics import AgentMetrics
from tether.schemas.log_fields import LogFieldMapping

log = logging.getLogger("tether.agent.file")

_CHUNKS_PER_TURN = 16  # fairness between files


@dataclass(eq=False)
class TrackedFile:
    path: Path
    fingerprint: str | None  # None after truncation until the file has a first line again
    fd: int
    inode: tuple[int, int]
    read_offset: int  # the next byte to read
    acked_offset: int  # every byte before it is acknowledged by Kafka
    pending: deque[tuple[int, asyncio.Future[None]]] = field(default_factory=deque)
    discarding: bool = False  # inside an over-long line whose head was shipped
    partial: tuple[int, int, float] | None = None  # (offset, size, first seen) of an unterminated line
    detached_since: float | None = None  # its path no longer leads to it (renamed away or deleted)


class FileSource:
    def __init__(
        self,
        config: FileSourceConfig,
        *,
        agent_id: str,
        checkpoints: Checkpoints,
        delivery: Delivery,
        partitions: int,
        mapping: LogFieldMapping,
        metrics: AgentMetrics,
    ) -> None:
        self.config = config
        self.agent_id = agent_id
        self.checkpoints = checkpoints
        self.delivery = delivery
        self.partitions = partitions
        self.mapping = mapping
        self.metrics = metrics
        self.files: dict[tuple[int, int], TrackedFile] = {}
        self._spreader = UntracedSpreader()
        self.encoder = chunk_encoder(
            agent_id=agent_id,
            partitions=partitions,
            mapping=mapping,
            max_line_bytes=config.max_line_bytes,
            long_lines=config.long_lines,
        )
        log.info("file line encoder", extra={"encoder": self.encoder.name})

    async def run(self, stop: asyncio.Event) -> None:
        first_scan = True
        last_checkpoint = time.monotonic()
        while not stop.is_set():
            self._scan(first_scan)
            first_scan = False
            behind = False  # a file has more to read than one turn takes
            for tracked in list(self.files.values()):
                behind |= await self._read(tracked, stop)
            self._collect_acks()
            self._release_finished()
            if time.monotonic() - last_checkpoint >= self.config.checkpoint_interval_seconds:
                self._checkpoint()
                last_checkpoint = time.monotonic()
            if behind:  # catching up: the next turn at once, not after a poll interval of idling
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.poll_interval_seconds)

    async def close(self, grace_seconds: float) -> None:
        """Wait (up to the grace period) for what was submitted, checkpoint it, close the files."""
        pending = [ack for tracked in self.files.values() for _, ack in tracked.pending]
        if pending:
            await asyncio.wait(pending, timeout=grace_seconds)
        self._collect_acks()
        self._checkpoint()
        for tracked in self.files.values():
            os.close(tracked.fd)
        self.files.clear()

    # -- discovery ---------------------------------------------------------------------------

    def _discover(self) -> list[Path]:
        found = {Path(p) for pattern in self.config.include for p in glob.glob(pattern, recursive=True)}
        excluded = self.config.exclude
        return sorted(p for p in found if not any(fnmatch(str(p), x) for x in excluded))

    def _scan(self, first_scan: bool) -> None:
        now = time.monotonic()
        seen: set[tuple[int, int]] = set()
        for path in self._discover():
            try:
                stat = path.stat()
            except OSError:
                continue
            if not path.is_file():
                continue
            inode = (stat.st_dev, stat.st_ino)
            seen.add(inode)
            tracked = self.files.get(inode)
            if tracked is not None:
                if tracked.path != path:
                    log.info("file renamed; following it", extra={"from": str(tracked.path), "to": str(path)})
                    tracked.path = path
                tracked.detached_since = None
                continue
            self._open(path, inode, stat.st_size, first_scan)
        for inode, tracked in self.files.items():
            if inode not in seen and tracked.detached_since is None:
                tracked.detached_since = now  # rotated away or deleted: finish it, then release it
        self.metrics.files_tailed.set(len(self.files))

    def _open(self, path: Path, inode: tuple[int, int], size: int, first_scan: bool) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        fingerprint = self._fingerprint(fd)
        if fingerprint is None:
            os.close(fd)  # no complete first line yet; look again next time
            return
        if os.fstat(fd).st_ino != inode[1]:
            os.close(fd)  # replaced between stat and open; next scan sees the new one
            return
        known = [t.acked_offset for t in self.files.values() if t.fingerprint == fingerprint]
        saved = self.checkpoints.offset(fingerprint)
        if known:
            start = min(known)  # a copy of a file we are reading: carry on from there
        elif saved is not None:
            start = saved
        elif first_scan and self.config.start_at == "end":
            start = size
        else:
            start = 0
        self.files[inode] = TrackedFile(path, fingerprint, fd, inode, start, start)
        log.info(
            "tailing file", extra={"log.file.path": str(path), "offset": start, "fingerprint": fingerprint}
        )

    def _fingerprint(self, fd: int) -> str | None:
        """Digest of the first line (capped); None while the file has no complete first line."""
        head = os.pread(fd, self.config.fingerprint_bytes, 0)
        newline = head.find(b"\n")
        if newline < 0 and len(head) < self.config.fingerprint_bytes:
            return None
        return hashlib.blake2b(head if newline < 0 else head[: newline + 1], digest_size=8).hexdigest()

    # -- reading ------------------------------------------------------------------------------

    async def _read(self, tracked: TrackedFile, stop: asyncio.Event) -> bool:
        """Ship up to a turn's worth of the file's complete lines; True if it has more right now."""
        try:
            size = os.fstat(tracked.fd).st_size
        except OSError:
            return False
        if size < tracked.read_offset:
            self._restart_truncated(tracked, size)
        if tracked.fingerprint is None:
            tracked.fingerprint = self._fingerprint(tracked.fd)
            if tracked.fingerprint is None:
                return False
        for _ in range(_CHUNKS_PER_TURN):
            if stop.is_set():
                return False
            data = os.pread(tracked.fd, self.config.read_chunk_bytes, tracked.read_offset)
            if not data:
                return False
            end = data.rfind(b"\n") + 1
            if end == 0:
                end = self._unterminated_end(tracked, data)
                if end == 0:
                    return False
            tracked.partial = None
            await self._ship(tracked, data[:end])
            # Let the chunk's send start now: Kafka works on it while the next one is encoded.
            await asyncio.sleep(0)
        return True

    def _unterminated_end(self, tracked: TrackedFile, data: bytes) -> int:
        """How much of newline-free `data` to ship now: all of an over-long line's head, a partial
        last line that stayed unchanged for the timeout, or nothing yet."""
        if len(data) >= self.config.max_line_bytes:
            return len(data)
        now = time.monotonic()
        if tracked.partial is None or tracked.partial[:2] != (tracked.read_offset, len(data)):
            tracked.partial = (tracked.read_offset, len(data), now)
            return 0
        if now - tracked.partial[2] >= self.config.partial_line_timeout_seconds:
            return len(data)
        return 0

    def _restart_truncated(self, tracked: TrackedFile, size: int) -> None:
        log.warning(
            "file truncated; reading it again from the start",
            extra={"log.file.path": str(tracked.path), "offset": tracked.read_offset, "size": size},
        )
        if tracked.fingerprint is not None and not any(
            t is not tracked and t.fingerprint == tracked.fingerprint for t in self.files.values()
        ):
            self.checkpoints.forget(tracked.fingerprint)
        tracked.fingerprint = None
        tracked.read_offset = tracked.acked_offset = 0
        tracked.pending.clear()  # acks of the old content no longer say anything about this one
        tracked.discarding = False
        tracked.partial = None

    async def _ship(self, tracked: TrackedFile, data: bytes) -> None:
        assert tracked.fingerprint is not None
        base, body = tracked.read_offset, data
        if tracked.discarding:  # the rest of an over-long line whose head was shipped
            newline = data.find(b"\n")
            body = b"" if newline < 0 else data[newline + 1 :]
            base += len(data) - len(body)
            tracked.discarding = newline < 0
        end = tracked.read_offset + len(data)
        self.metrics.file_bytes.inc(len(data))
        encoded = None
        if body:
            encoded = self.encoder.encode(
                body,
                base,
                fingerprint=tracked.fingerprint,
                path=str(tracked.path),
                untraced_partition=self._spreader.next_partition(self.partitions),
                observed_ns=time.time_ns(),
            )
            # Without a newline, the tail is the head of an over-long line (skip its rest next
            # time) or a partial line shipped after its timeout (complete as it is).
            tracked.discarding = len(body) - (body.rfind(b"\n") + 1) >= self.config.max_line_bytes
            self.metrics.parse_errors.inc(encoded.parse_errors)
            if encoded.truncated:
                self.metrics.truncated_lines.labels(self.config.long_lines).inc(encoded.truncated)
        if encoded is not None and encoded.records:
            batch = Batch("logs", encoded.records, encoded.lines)
            ack = (await self.delivery.submit(batch, wait_for_room=True)).acked
            self.metrics.file_lines.inc(encoded.lines)
        else:
            ack = asyncio.get_running_loop().create_future()
            ack.set_result(None)
        tracked.pending.append((end, ack))
        tracked.read_offset = end

    # -- acknowledgement and release ---------------------------------------------------------

    def _collect_acks(self) -> None:
        for tracked in self.files.values():
            while tracked.pending and tracked.pending[0][1].done():
                end, ack = tracked.pending.popleft()
                if not ack.cancelled() and ack.exception() is not None:
                    log.error(
                        "batch dropped before Kafka acknowledged it",
                        extra={"log.file.path": str(tracked.path), "error": str(ack.exception())},
                    )
                tracked.acked_offset = end
            with contextlib.suppress(OSError):
                lag = os.fstat(tracked.fd).st_size - tracked.acked_offset
                self.metrics.checkpoint_lag.labels(str(tracked.path)).set(max(lag, 0))

    def _checkpoint(self) -> None:
        offsets: dict[str, tuple[str, int]] = {}
        for tracked in self.files.values():
            if tracked.fingerprint is None:
                continue
            previous = offsets.get(tracked.fingerprint)
            if previous is None or tracked.acked_offset < previous[1]:
                offsets[tracked.fingerprint] = (str(tracked.path), tracked.acked_offset)
        for fingerprint, (path, offset) in offsets.items():
            self.checkpoints.update(fingerprint, path, offset)
        self.checkpoints.flush()

    def _release_finished(self) -> None:
        """Close files rotated away or deleted once read to EOF, acknowledged, and quiet."""
        now = time.monotonic()
        for inode, tracked in list(self.files.items()):
            if tracked.detached_since is None or tracked.pending:
                continue
            if now - tracked.detached_since < self.config.partial_line_timeout_seconds:
                continue
            with contextlib.suppress(OSError):
                if os.fstat(tracked.fd).st_size > tracked.read_offset:
                    continue
            os.close(tracked.fd)
            del self.files[inode]
            with contextlib.suppress(KeyError):
                self.metrics.checkpoint_lag.remove(str(tracked.path))
            if tracked.fingerprint and not any(
                t.fingerprint == tracked.fingerprint for t in self.files.values()
            ):
                self.checkpoints.forget(tracked.fingerprint)
            log.info("released file", extra={"log.file.path": str(tracked.path)})
        self.metrics.files_tailed.set(len(self.files))
