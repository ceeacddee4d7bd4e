"""A batch: what a source hands to delivery, Kafka records of one signal keyed by partition."""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.schemas.records import Signal


@dataclass(frozen=True, slots=True)
class Batch:
    """Kafka records of one signal, one per partition, and how many items (lines, spans) they hold.

    `partitions` is the partition count the records were split for (0: not known, as in spool
    files of older agents). Delivery splits them again when Kafka's live count is another
    (agent/repartition.py), so an agent that started without Kafka keeps a trace's logs and spans
    in the same-numbered partition.
    """

    signal: Signal
    records: dict[int, bytes]
    items: int
    partitions: int = field(kw_only=True)

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.records.values())
