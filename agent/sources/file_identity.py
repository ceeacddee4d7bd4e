"""Which file is which: the fingerprint a newly opened file's lines go out under, and where to
start reading it.

A file is the inode it lives in (device and inode number) together with its beginning: its first
line, and more of its first `fingerprint_bytes` bytes as they are written. Neither alone will do:
many services begin every file with the same line, and a deleted file's inode is soon given to a
new file.

- A file's lines go out under a fingerprint, the middle part of their record ids
  (`agent_id:fingerprint:offset`), given when the file is first seen: a digest of its device, its
  inode, its first line (as far as written) and the time. It is in the checkpoints on disk before
  any line goes out under it, so a restart (same host: same devices and inodes) finds it again,
  and no two files, not even an inode's successive files, share one.
- While the file source holds a file open its inode cannot be reused, so a rename (rotation by
  rename+create) is followed to EOF under the same fingerprint.
- A restarted agent finds a file's checkpoint by device and inode, and takes it up only if the
  file's first bytes are still those the checkpoint recorded; otherwise the inode holds another
  file now, read as a new one. A checkpoint past the file's end means it was truncated meanwhile.
- A file that shrinks was truncated, and so was one whose first bytes changed (truncated and
  written again past where we had read between two polls): it is read again from 0 under a new
  fingerprint, even when it begins with the same line again (the old lines keep their ids, the new
  ones get their own).
- copytruncate: the copy is a new inode with the old content. A new file that begins with all of
  the recorded beginning of a file we know is that file's copy when that beginning holds at least
  two lines or all `fingerprint_bytes`. Known are the files we tail, the contents that left their
  inode within the last minute (truncated: the copy may turn up after the truncation was seen;
  kept in the checkpoints, so a restart in between still knows them, and its first scan looks for
  all of them), and at start-up every checkpoint (copytruncate while the agent was down; a file
  whose device a reboot renumbered is found again the same way, as a copy of itself). The copy takes the
  original's fingerprint and starts at its acknowledged offset, so the lines both hold get the
  same record ids (invisible downstream), and the lines only the copy holds (written after our
  last read, before the truncation) go out: nothing is lost, nothing duplicated. A first line
  alone proves nothing: a file that shares only that with another is read whole under its own
  fingerprint. The price of that rule: the copy of a file that had a single line when we last
  looked goes out whole again under new ids (a duplicate, never a loss), and a distinct file that
  begins byte for byte (timestamps included) like all we recorded of another (two lines at least)
  is taken for its copy.
- Checkpoints of agents that keyed them by the first line only are taken over on the first scan:
  by the file at the recorded path if its first line still matches, else by a file with that first
  line (renamed while the agent was down). The file keeps the old fingerprint, so the lines sent
  again after the upgrade keep their ids; entries no file takes are dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from tether.agent.checkpoint import (
    Checkpoints,
    FileCheckpoint,
    FileKey,
    FormerCheckpoint,
    LegacyCheckpoint,
    head_digest,
)

log = logging.getLogger("tether.agent.file")

FORMER_KEPT_SECONDS = 60.0  # how long a truncated file's former content is looked for in new files


class Tailed(Protocol):
    """What identity needs of a file being tailed."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def head(self) -> bytes: ...
    @property
    def acked_offset(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Beginning:
    """A file's content known by its first bytes: a new file that begins with them is its copy."""

    fingerprint: str
    head: str  # head_digest of the first head_bytes bytes
    head_bytes: int
    acked_offset: int

    @classmethod
    def of(cls, checkpoint: FileCheckpoint) -> Beginning:
        return cls(checkpoint.fingerprint, checkpoint.head, checkpoint.head_bytes, checkpoint.offset)


class FileIdentities:
    def __init__(
        self, checkpoints: Checkpoints, *, fingerprint_bytes: int, start_at: Literal["beginning", "end"]
    ) -> None:
        self.checkpoints = checkpoints
        self.fingerprint_bytes = fingerprint_bytes
        self.start_at = start_at
        # Contents gone from their inode (truncated, or changed while we were away), each until a
        # monotonic time: their copy (copytruncate) may turn up after that was seen. They are in
        # the checkpoints too, so a copy found after a restart is still known: those of an earlier
        # run are looked for until their time is up, and at the first scan in any case.
        now, wall = time.monotonic(), time.time()
        self._former: list[tuple[float, Beginning]] = [
            (
                now + max(saved.until - wall, 0.0),
                Beginning(saved.fingerprint, saved.head, saved.head_bytes, saved.offset),
            )
            for saved in checkpoints.formers()
        ]

    def forget_expired(self, now: float) -> None:
        kept = []
        for until, former in self._former:
            if until > now:
                kept.append((until, former))
            else:
                self.checkpoints.forget_former(former.fingerprint)
        self._former = kept

    def remember_former(self, beginning: Beginning, path: Path) -> None:
        self._former.append((time.monotonic() + FORMER_KEPT_SECONDS, beginning))
        self.checkpoints.remember_former(
            FormerCheckpoint(
                beginning.fingerprint,
                beginning.acked_offset,
                str(path),
                beginning.head,
                beginning.head_bytes,
                until=time.time() + FORMER_KEPT_SECONDS,
            )
        )

    def identify(
        self,
        path: Path,
        inode: FileKey,
        head: bytes,
        size: int,
        *,
        first_scan: bool,
        tailed: Mapping[FileKey, Tailed],
    ) -> tuple[str, int]:
        """The fingerprint a newly opened file's lines go out under, and where to start reading."""
        saved = self.checkpoints.get(inode)
        if saved is not None:
            if head_digest(head[: saved.head_bytes]) == saved.head and saved.offset <= size:
                return saved.fingerprint, saved.offset
            # Truncated, rewritten or replaced while we were away: read as new, but its former
            # content may sit in a copy.
            self.remember_former(Beginning.of(saved), Path(saved.path))
            if saved.offset > size and head_digest(head[: saved.head_bytes]) == saved.head:
                return self.new_fingerprint(inode, head), 0  # truncated: all of it is new
        legacy = self._claim_legacy(path, head) if first_scan else None
        if legacy is not None:
            if legacy.offset <= size:
                return legacy.first_line, legacy.offset
            return self.new_fingerprint(inode, head), 0  # truncated meanwhile
        original = self._original_of(head, first_scan, tailed)
        if original is not None:
            fingerprint, offset = original
            log.info("file is a copy of a known one; carrying on", extra={"log.file.path": str(path)})
            return fingerprint, min(offset, size)
        if first_scan and self.start_at == "end":
            return self.new_fingerprint(inode, head), size
        return self.new_fingerprint(inode, head), 0

    def new_fingerprint(self, inode: FileKey, head: bytes) -> str:
        """A fingerprint no other file has had: its device, inode and first line, and the time."""
        newline = head.find(b"\n")
        first_line = head if newline < 0 else head[: newline + 1]
        seed = b"%d:%d:%d:" % (inode[0], inode[1], time.time_ns())
        return hashlib.blake2b(seed + first_line, digest_size=8).hexdigest()

    def _original_of(
        self, head: bytes, first_scan: bool, tailed: Mapping[FileKey, Tailed]
    ) -> tuple[str, int] | None:
        """If a file beginning with `head` is a copy of a file we know (tailed, gone from its inode
        lately, or, at start-up, checkpointed): the original's fingerprint and acknowledged offset."""
        matches: list[tuple[int, str, int]] = []  # (bytes that agree, fingerprint, offset)
        for file in tailed.values():
            if self.proves_identity(file.head) and head.startswith(file.head):
                matches.append((len(file.head), file.fingerprint, file.acked_offset))
        known = [former for _, former in self._former]
        if first_scan:  # what changed while we were away
            saved = self.checkpoints.files().items()
            known += [Beginning.of(checkpoint) for key, checkpoint in saved if key not in tailed]
        digests: dict[int, str | None] = {}  # of head's first n bytes; most beginnings have one n
        for beginning in known:
            n = beginning.head_bytes
            if n not in digests:
                prefix = head[:n]
                proves = len(prefix) == n and self.proves_identity(prefix)
                digests[n] = head_digest(prefix) if proves else None
            if digests[n] == beginning.head:
                matches.append((n, beginning.fingerprint, beginning.acked_offset))
        if not matches:
            return None
        fingerprint = max(matches)[1]  # the longest beginning proves most
        return fingerprint, min(offset for _, fp, offset in matches if fp == fingerprint)

    def proves_identity(self, head: bytes) -> bool:
        """Whether a file beginning with `head` is the same content: more than its first line."""
        return len(head) >= self.fingerprint_bytes or head.count(b"\n") >= 2

    def _claim_legacy(self, path: Path, head: bytes) -> LegacyCheckpoint | None:
        """The old-format checkpoint of this file, if there is one (see the module docstring)."""
        first_line = self._first_line_fingerprint(head)
        entry = self.checkpoints.legacy.get(first_line) if first_line else None
        if entry is None:
            return None
        owner = Path(os.path.abspath(entry.path))
        if owner != path and self._first_line_fingerprint_at(owner) == first_line:
            return None  # its own file is still there: this one only begins alike
        return self.checkpoints.take_legacy(entry.first_line)

    def _first_line_fingerprint(self, head: bytes) -> str | None:
        """The fingerprint agents before the inode in the identity gave a file: a digest of its
        first line (or of its first fingerprint_bytes); None while there is no such line."""
        newline = head.find(b"\n")
        if newline < 0 and len(head) < self.fingerprint_bytes:
            return None
        return hashlib.blake2b(head if newline < 0 else head[: newline + 1], digest_size=8).hexdigest()

    def _first_line_fingerprint_at(self, path: Path) -> str | None:
        try:
            with path.open("rb") as handle:
                return self._first_line_fingerprint(handle.read(self.fingerprint_bytes))
        except OSError:
            return None
