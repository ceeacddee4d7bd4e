"""The file source: tails JSON log files, ships complete lines, checkpoints what Kafka acknowledged.

Identity (agent/sources/file_identity.py): a file is its device and inode together with its
beginning, so files that begin alike and an inode's successive files are never taken for one
another; its lines go out under a fingerprint kept in the checkpoints; rename rotation is followed
through the open descriptor, a copytruncate copy carries on under the original's ids, a truncated
file is read again under a new fingerprint. An empty file is opened once it has a byte; a file of a
single unterminated line is opened at once, its line shipped after `partial_line_timeout_seconds`.

Paths (in records and checkpoints) are absolute: a relative include glob is relative to the
working directory.

Acknowledgement. Chunks are submitted to delivery without waiting; each carries an ack future.
A file's checkpoint advances over the longest prefix of chunks Kafka acknowledged, and is
persisted every `checkpoint_interval_seconds` and at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from tether.agent.batch import Batch
from tether.agent.checkpoint import Checkpoints, FileCheckpoint, FileKey, head_digest
from tether.agent.chunks import EncodedChunk, chunk_encoder
from tether.agent.config import FileSourceConfig
from tether.agent.container_logs import COMPRESSED_ROTATION, LogFormat, detect_format
from tether.agent.delivery import Delivery
from tether.agent.encode import UntracedSpreader
from tether.agent.metrics import AgentMetrics
from tether.agent.sources.file_identity import Beginning, FileIdentities
from tether.schemas.log_fields import LogFieldMapping

log = logging.getLogger("tether.agent.file")

_CHUNKS_PER_TURN = 16  # fairness between files


@dataclass(eq=False)
class TrackedFile:
    path: Path
    fingerprint: str  # the middle part of its lines' record ids
    fd: int
    inode: FileKey
    read_offset: int  # the next byte to read
    acked_offset: int  # every byte before it is acknowledged by Kafka
    head: bytes = b""  # its first bytes as far as seen (up to fingerprint_bytes): how a copy is known
    pending: deque[tuple[int, asyncio.Future[None]]] = field(default_factory=deque)
    discarding: bool = False  # inside an over-long line whose head was shipped
    partial: tuple[int, int, float] | None = None  # (offset, size, first seen) of an unterminated line
    detached_since: float | None = None  # its path no longer leads to it (renamed away or deleted)
    # Container log files (agent/container_logs.py): the format of its first line (None until its
    # first chunk), the streams whose rest of a shipped record is skipped, and the record waiting
    # for its end (offset, since).
    log_format: LogFormat | None = None
    skipping: int = 0
    waiting: tuple[int, float] | None = None


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
        self.files: dict[FileKey, TrackedFile] = {}
        self.identities = FileIdentities(
            checkpoints, fingerprint_bytes=config.fingerprint_bytes, start_at=config.start_at
        )
        self._spreader = UntracedSpreader()
        self.encoder = chunk_encoder(
            agent_id=agent_id,
            partitions=partitions,
            mapping=mapping,
            max_line_bytes=config.max_line_bytes,
            long_lines=config.long_lines,
            move_routing_keys=not config.original_body,
        )
        log.info("file line encoder", extra={"encoder": self.encoder.name})

    def use_partitions(self, partitions: int) -> None:
        """Split from now on for `partitions`: Kafka's count, learnt after the agent started."""
        self.partitions = self.encoder.partitions = partitions

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

    # -- discovery and identity ---------------------------------------------------------------

    def _discover(self) -> list[Path]:
        """The files the include globs match and the exclude globs do not, by absolute path."""
        found: set[Path] = set()
        for pattern in self.config.include:
            for match in glob.glob(pattern, recursive=True):
                absolute = os.path.abspath(match)  # not resolve(): a symlink's path is the file's name
                # An exclude glob may be written like the include (relative) or absolute.
                # compressed rotations are never text lines, whatever the excludes say
                excluded = [*self.config.exclude, COMPRESSED_ROTATION]
                if not any(fnmatch(match, x) or fnmatch(absolute, x) for x in excluded):
                    found.add(Path(absolute))
        return sorted(found)

    def _scan(self, first_scan: bool) -> None:
        now = time.monotonic()
        if not first_scan:  # the first scan looks for copies of every former content kept
            self.identities.forget_expired(now)
        seen: set[FileKey] = set()
        opened = False
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
                self._extend_head(tracked, stat.st_size)
                continue
            opened |= self._open(path, inode, first_scan)
        for inode, tracked in self.files.items():
            if inode not in seen and tracked.detached_since is None:
                tracked.detached_since = now  # rotated away or deleted: finish it, then release it
        if first_scan:
            self.checkpoints.drop_legacy()  # what no file took belongs to files gone meanwhile
        if opened or first_scan:
            self.checkpoints.flush()  # new fingerprints are on disk before any line goes out under them
        self.metrics.files_tailed.set(len(self.files))

    def _open(self, path: Path, inode: FileKey, first_scan: bool) -> bool:
        """Start tailing a file found at `path`; False if it cannot be yet (empty, gone, replaced)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        stat = os.fstat(fd)
        if (stat.st_dev, stat.st_ino) != inode or stat.st_size == 0:
            os.close(fd)  # replaced between stat and open, or nothing to know it by yet: next scan
            return False
        head = os.pread(fd, self.config.fingerprint_bytes, 0)
        fingerprint, start = self.identities.identify(
            path, inode, head, stat.st_size, first_scan=first_scan, tailed=self.files
        )
        tracked = TrackedFile(path, fingerprint, fd, inode, start, start, head=head)
        self.files[inode] = tracked
        self.checkpoints.update(inode, self._checkpoint_of(tracked))
        log.info(
            "tailing file", extra={"log.file.path": str(path), "offset": start, "fingerprint": fingerprint}
        )
        return True

    def _extend_head(self, tracked: TrackedFile, size: int) -> None:
        """Record more of a growing file's beginning, up to fingerprint_bytes."""
        if len(tracked.head) >= self.config.fingerprint_bytes or size <= len(tracked.head):
            return
        with contextlib.suppress(OSError):
            head = os.pread(tracked.fd, self.config.fingerprint_bytes, 0)
            if head.startswith(tracked.head):  # otherwise rewritten: the reading will see it
                tracked.head = head

    def _checkpoint_of(self, tracked: TrackedFile) -> FileCheckpoint:
        return FileCheckpoint(
            fingerprint=tracked.fingerprint,
            offset=tracked.acked_offset,
            path=str(tracked.path),
            head=head_digest(tracked.head),
            head_bytes=len(tracked.head),
        )

    # -- reading ------------------------------------------------------------------------------

    async def _read(self, tracked: TrackedFile, stop: asyncio.Event) -> bool:
        """Ship up to a turn's worth of the file's complete lines; True if it has more right now."""
        try:
            size = os.fstat(tracked.fd).st_size
        except OSError:
            return False
        if size < tracked.read_offset or (size > tracked.read_offset and self._rewritten(tracked)):
            self._restart_truncated(tracked, size)
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
            if not await self._ship(tracked, data[:end]):
                return False  # a container record waits for its end
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

    def _rewritten(self, tracked: TrackedFile) -> bool:
        """Whether the file's beginning is no longer what we saw: truncated and written again past
        where we had read between two polls (copytruncate under a busy writer), which its size
        alone never tells. One small read per poll with something to read."""
        try:
            return os.pread(tracked.fd, len(tracked.head), 0) != tracked.head
        except OSError:
            return False

    def _restart_truncated(self, tracked: TrackedFile, size: int) -> None:
        log.warning(
            "file truncated; reading it again from the start",
            extra={"log.file.path": str(tracked.path), "offset": tracked.read_offset, "size": size},
        )
        self.identities.remember_former(Beginning.of(self._checkpoint_of(tracked)), tracked.path)
        tracked.head = os.pread(tracked.fd, self.config.fingerprint_bytes, 0)
        tracked.fingerprint = self.identities.new_fingerprint(tracked.inode, tracked.head)
        tracked.read_offset = tracked.acked_offset = 0
        tracked.pending.clear()  # acks of the old content no longer say anything about this one
        tracked.discarding = False
        tracked.partial = None
        tracked.log_format, tracked.skipping, tracked.waiting = None, 0, None
        # On disk before a line goes out under the new fingerprint, so a restart reuses it.
        self.checkpoints.advance(tracked.inode, self._checkpoint_of(tracked))

    async def _ship(self, tracked: TrackedFile, data: bytes) -> bool:
        """Encode and submit `data`; False when a container record at its end waits for the rest
        (read again next time)."""
        assert tracked.fingerprint is not None
        base, body = tracked.read_offset, data
        if tracked.discarding:  # the rest of an over-long line whose head was shipped
            newline = data.find(b"\n")
            body = b"" if newline < 0 else data[newline + 1 :]
            base += len(data) - len(body)
            tracked.discarding = newline < 0
        end = tracked.read_offset + len(data)
        encoded = None
        if body:
            encoded = self._encode(tracked, body, base, len(data) >= self.config.read_chunk_bytes)
            end = base + encoded.consumed
            # Without a newline, the tail is the head of an over-long line (skip its rest next
            # time) or a partial line shipped after its timeout (complete as it is).
            tracked.discarding = (
                encoded.consumed == len(body)
                and len(body) - (body.rfind(b"\n") + 1) >= self.config.max_line_bytes
            )
            self.metrics.parse_errors.inc(encoded.parse_errors)
            if encoded.truncated:
                self.metrics.truncated_lines.labels(self.config.long_lines).inc(encoded.truncated)
        if encoded is not None and encoded.records:
            batch = Batch("logs", encoded.records, encoded.lines, partitions=self.partitions)
            ack = (await self.delivery.submit(batch, wait_for_room=True)).acked
            self.metrics.file_lines.inc(encoded.lines)
        else:
            ack = asyncio.get_running_loop().create_future()
            ack.set_result(None)
        self.metrics.file_bytes.inc(end - tracked.read_offset)
        tracked.pending.append((end, ack))
        complete = end == tracked.read_offset + len(data)
        tracked.read_offset = end
        return complete

    def _encode(self, tracked: TrackedFile, body: bytes, base: int, full_chunk: bool) -> EncodedChunk:
        """The chunk's records. Of a container log: a record without its end in the chunk waits
        for it, up to partial_line_timeout_seconds (then it ships as it is), or at once when it
        alone fills a whole chunk."""
        assert tracked.fingerprint is not None
        if tracked.log_format is None:  # a first line is there now (or fingerprint_bytes of it)
            tracked.log_format = detect_format(os.pread(tracked.fd, self.config.fingerprint_bytes, 0))
        now = time.monotonic()
        flush_before = 0
        if (
            tracked.waiting is not None
            and now - tracked.waiting[1] >= self.config.partial_line_timeout_seconds
        ):
            flush_before = base + len(body)  # all it holds: one waiting record may hold others back
        for attempt in range(2):
            encoded = self.encoder.encode(
                body,
                base,
                fingerprint=tracked.fingerprint,
                path=str(tracked.path),
                untraced_partition=self._spreader.next_partition(self.partitions),
                observed_ns=time.time_ns(),
                log_format=tracked.log_format,
                skipping=tracked.skipping,
                flush_before=flush_before,
            )
            if encoded.consumed or not full_chunk or attempt:
                break
            flush_before = base + len(body)  # a record longer than a chunk: ship what it holds
        tracked.skipping = encoded.skipping
        if encoded.consumed == len(body):
            tracked.waiting = None
        elif tracked.waiting is None or tracked.waiting[0] != base + encoded.consumed:
            tracked.waiting = (base + encoded.consumed, now)
        return encoded

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
        for tracked in self.files.values():
            self.checkpoints.update(tracked.inode, self._checkpoint_of(tracked))
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
            self.checkpoints.forget(inode)
            log.info("released file", extra={"log.file.path": str(tracked.path)})
        self.metrics.files_tailed.set(len(self.files))
