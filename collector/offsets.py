"""The commit watermark: Kafka offsets are committed only up to the first unacknowledged record."""

from __future__ import annotations


class OffsetTracker:
    """Per partition: which consumed records still have documents not acknowledged downstream."""

    def __init__(self) -> None:
        self._outstanding: dict[int, int] = {}  # offset -> documents not yet acknowledged
        self._next = -1  # one past the highest offset seen

    def add(self, offset: int, documents: int) -> None:
        self._next = max(self._next, offset + 1)
        if documents > 0:
            self._outstanding[offset] = documents

    def done(self, offset: int, documents: int = 1) -> None:
        left = self._outstanding[offset] - documents
        if left > 0:
            self._outstanding[offset] = left
        else:
            del self._outstanding[offset]

    def watermark(self) -> int | None:
        """The offset to commit (the next record to read after a restart), None before any record."""
        if self._outstanding:
            return min(self._outstanding)
        return self._next if self._next >= 0 else None

    @property
    def pending(self) -> int:
        return len(self._outstanding)
