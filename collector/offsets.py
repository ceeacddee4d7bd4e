"""The commit watermark: Kafka offsets are committed only up to the first unacknowledged record.

A consumed record becomes parts delivered apart (each document built from it goes to Elasticsearch;
a spans record also goes to Jaeger as a whole). Its RecordAck counts those parts down; the last
one to be acknowledged marks the record done in its partition's OffsetTracker.
"""

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

    def track(self, offset: int, parts: int) -> RecordAck:
        """The acknowledgement of the record at `offset`, done once its `parts` are (at once if none)."""
        self.add(offset, 1 if parts > 0 else 0)
        return RecordAck(self, offset, parts)

    def watermark(self) -> int | None:
        """The offset to commit (the next record to read after a restart), None before any record."""
        if self._outstanding:
            return min(self._outstanding)
        return self._next if self._next >= 0 else None

    @property
    def pending(self) -> int:
        return len(self._outstanding)


class RecordAck:
    """One consumed record's acknowledgement, shared by every part delivered from it.

    It holds the tracker that made it rather than a partition number: once a partition is revoked
    its tracker is dropped, so a late acknowledgement finishes on that old tracker and can never
    move the watermark of the partition's next assignment.
    """

    __slots__ = ("_pending", "_tracker", "offset")

    def __init__(self, tracker: OffsetTracker, offset: int, parts: int) -> None:
        self._tracker = tracker
        self.offset = offset
        self._pending = parts

    def done(self) -> None:
        """One part acknowledged; the last one completes the record."""
        self._pending -= 1
        if self._pending <= 0:
            if self._pending < 0:
                raise RuntimeError(f"offset {self.offset} acknowledged more often than it has parts")
            self._tracker.done(self.offset)

    @property
    def pending(self) -> int:
        """Parts not acknowledged yet."""
        return self._pending
