"""File checkpoints: fingerprint -> byte offset of the first line Kafka has not acknowledged."""

from __future__ import annotations

import os
from pathlib import Path

import orjson


class Checkpoints:
    """Persisted atomically (write, fsync, rename, fsync the directory): never half-written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offsets: dict[str, dict[str, int | str]] = {}
        if path.exists():
            self._offsets = orjson.loads(path.read_bytes())

    def offset(self, fingerprint: str) -> int | None:
        entry = self._offsets.get(fingerprint)
        return int(entry["offset"]) if entry else None

    def advance(self, fingerprint: str, path: str, offset: int) -> None:
        self._offsets[fingerprint] = {"offset": offset, "path": path}
        self._persist()

    def forget(self, fingerprint: str) -> None:
        if self._offsets.pop(fingerprint, None) is not None:
            self._persist()

    def _persist(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as handle:
            handle.write(orjson.dumps(self._offsets))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
