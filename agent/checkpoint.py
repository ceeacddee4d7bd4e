"""File checkpoints: fingerprint -> byte offset of the first line Kafka has not acknowledged."""

from __future__ import annotations

from pathlib import Path

import orjson

from tether.agent.durable import write_atomically


class Checkpoints:
    """Persisted atomically (write, fsync, rename, fsync the directory): never half-written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offsets: dict[str, dict[str, int | str]] = {}
        self._dirty = False
        if path.exists():
            self._offsets = orjson.loads(path.read_bytes())

    def offset(self, fingerprint: str) -> int | None:
        entry = self._offsets.get(fingerprint)
        return int(entry["offset"]) if entry else None

    def advance(self, fingerprint: str, path: str, offset: int) -> None:
        """Record and persist at once."""
        self.update(fingerprint, path, offset)
        self.flush()

    def update(self, fingerprint: str, path: str, offset: int) -> None:
        """Record in memory; `flush` persists."""
        entry: dict[str, int | str] = {"offset": offset, "path": path}
        if self._offsets.get(fingerprint) != entry:
            self._offsets[fingerprint] = entry
            self._dirty = True

    def forget(self, fingerprint: str) -> None:
        if self._offsets.pop(fingerprint, None) is not None:
            self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            self._persist()
            self._dirty = False

    def _persist(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, orjson.dumps(self._offsets))
