"""File checkpoints: for each file, the fingerprint its lines go out under and the byte offset of
the first line Kafka has not acknowledged.

On disk (`checkpoints.json`), one entry per file, keyed by `"<device>:<inode>"`:
`{"fingerprint", "offset", "path", "head", "head_bytes"}`, where `head` is a digest of the file's
first `head_bytes` bytes, by which a restarted agent tells the file from another that took its inode
after it was deleted (agent/sources/file.py has the identity rules).

Agents before the inode was part of a file's identity keyed entries by the fingerprint of the file's
first line, `{"offset", "path"}`, that fingerprint being also the one its lines went out under. Such
entries still load, as `LegacyCheckpoint`s, for the file source to match once at start-up; they are
written back until it takes them or drops them.

Content gone from its inode (a truncated or replaced file) whose copy may yet turn up
(copytruncate) is kept too, as a `FormerCheckpoint` under `"former:<fingerprint>"`:
`{"offset", "path", "former": {"fingerprint", "head", "head_bytes", "until"}}`, so that a copy found
only after a restart still carries on under its fingerprint. No top-level "fingerprint": an older
agent reads the entry as a first-line one that no file takes, and drops it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tether import failpoints
from tether.agent.durable import write_atomically

FileKey = tuple[int, int]  # (st_dev, st_ino): which file, while it exists


def head_digest(head: bytes) -> str:
    """The digest of a file's first bytes kept in its checkpoint (128 bits: not a record id part)."""
    return hashlib.blake2b(head, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class FileCheckpoint:
    fingerprint: str  # the middle part of its lines' record ids
    offset: int  # every byte before it is acknowledged by Kafka
    path: str
    head: str  # head_digest of the file's first head_bytes bytes
    head_bytes: int


@dataclass(frozen=True, slots=True)
class LegacyCheckpoint:
    """An entry written by an agent that identified files by their first line only."""

    first_line: str  # the fingerprint of the first line: the key, and the fingerprint of its lines
    offset: int
    path: str


@dataclass(frozen=True, slots=True)
class FormerCheckpoint:
    """Content gone from its inode: the fingerprint and acknowledged offset its copy carries on
    from, known by its beginning, looked for until `until` (Unix time)."""

    fingerprint: str
    offset: int
    path: str
    head: str
    head_bytes: int
    until: float


FORMER_PREFIX = "former:"


def _key(key: FileKey) -> str:
    return f"{key[0]}:{key[1]}"


class Checkpoints:
    """Persisted atomically (write, fsync, rename, fsync the directory): never half-written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files: dict[FileKey, FileCheckpoint] = {}
        self.legacy: dict[str, LegacyCheckpoint] = {}
        self._formers: dict[str, FormerCheckpoint] = {}  # by fingerprint
        self._dirty = False
        if path.exists():
            self._load(orjson.loads(path.read_bytes()))

    def _load(self, entries: dict[str, dict[str, Any]]) -> None:
        for key, entry in entries.items():
            former = entry.get("former")
            if key.startswith(FORMER_PREFIX) and isinstance(former, dict):
                self._formers[str(former["fingerprint"])] = FormerCheckpoint(
                    fingerprint=str(former["fingerprint"]),
                    offset=int(entry["offset"]),
                    path=str(entry["path"]),
                    head=str(former["head"]),
                    head_bytes=int(former["head_bytes"]),
                    until=float(former["until"]),
                )
                continue
            if "fingerprint" not in entry:
                self.legacy[key] = LegacyCheckpoint(key, int(entry["offset"]), str(entry["path"]))
                continue
            device, inode = (int(part) for part in key.split(":"))
            self._files[(device, inode)] = FileCheckpoint(
                fingerprint=str(entry["fingerprint"]),
                offset=int(entry["offset"]),
                path=str(entry["path"]),
                head=str(entry["head"]),
                head_bytes=int(entry["head_bytes"]),
            )

    def get(self, key: FileKey) -> FileCheckpoint | None:
        return self._files.get(key)

    def files(self) -> dict[FileKey, FileCheckpoint]:
        return dict(self._files)

    def advance(self, key: FileKey, checkpoint: FileCheckpoint) -> None:
        """Record and persist at once."""
        self.update(key, checkpoint)
        self.flush()

    def update(self, key: FileKey, checkpoint: FileCheckpoint) -> None:
        """Record in memory; `flush` persists."""
        if self._files.get(key) != checkpoint:
            self._files[key] = checkpoint
            self._dirty = True

    def forget(self, key: FileKey) -> None:
        if self._files.pop(key, None) is not None:
            self._dirty = True

    def formers(self) -> list[FormerCheckpoint]:
        return list(self._formers.values())

    def remember_former(self, former: FormerCheckpoint) -> None:
        """Record in memory; `flush` persists (the truncated file's new fingerprint flushes it)."""
        self._formers[former.fingerprint] = former
        self._dirty = True

    def forget_former(self, fingerprint: str) -> None:
        if self._formers.pop(fingerprint, None) is not None:
            self._dirty = True

    def take_legacy(self, first_line: str) -> LegacyCheckpoint | None:
        """Remove and return the old-format entry of this first-line fingerprint, if any."""
        entry = self.legacy.pop(first_line, None)
        if entry is not None:
            self._dirty = True
        return entry

    def drop_legacy(self) -> None:
        """Forget the old-format entries no file took."""
        if self.legacy:
            self.legacy.clear()
            self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            self._persist()
            self._dirty = False

    def _persist(self) -> None:
        entries: dict[str, dict[str, Any]] = {
            first_line: {"offset": entry.offset, "path": entry.path}
            for first_line, entry in self.legacy.items()
        }
        for fingerprint, former in self._formers.items():
            entries[FORMER_PREFIX + fingerprint] = {
                "offset": former.offset,
                "path": former.path,
                "former": {
                    "fingerprint": former.fingerprint,
                    "head": former.head,
                    "head_bytes": former.head_bytes,
                    "until": former.until,
                },
            }
        for key, checkpoint in self._files.items():
            entries[_key(key)] = {
                "fingerprint": checkpoint.fingerprint,
                "offset": checkpoint.offset,
                "path": checkpoint.path,
                "head": checkpoint.head,
                "head_bytes": checkpoint.head_bytes,
            }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, orjson.dumps(entries))
        failpoints.reach("agent.after_checkpoint")
