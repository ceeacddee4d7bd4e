"""A batch: what a source hands to delivery, Kafka records of one signal keyed by partition."""

from __future__ import annotations

from dataclasses import dataclass

from tether.schemas.records import Signal


@dataclass(frozen=True, slots=True)
class Batch:
    """Kafka records of one signal, one per partition, and how many items (lines, spans) they hold."""

    signal: Signal
    records: dict[int, bytes]
    items: int

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.records.values())
