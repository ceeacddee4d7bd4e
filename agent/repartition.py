"""Splitting a batch again for Kafka's live partition count.

A batch is split by partition = trace id mod count (schemas/README.md, "Partitioning") when a
source accepts it. An agent that starts while Kafka is unreachable splits with the count it
remembers from its last connection (agent/partition_memory.py), or with 1 (one unsplit record per
batch) when it has none; spool files of older agents do not say which count they used. Before
such a batch is sent, the records are joined into one OTLP request and split again with the live
count, so every item goes to partition trace id mod live count, whatever was assumed before.

Joining is concatenation: serialized protobuf messages concatenated parse as one message whose
repeated fields (resource_logs, resource_spans) are the parts' in order. Items keep their
resource and scope; untraced log records all go to the one partition given.
"""

from __future__ import annotations

import logging

from tether.agent.batch import Batch
from tether.agent.split import split_logs_bytes, split_traces_bytes

log = logging.getLogger("tether.agent.repartition")


def needs_repartition(batch: Batch, live_partitions: int) -> bool:
    return live_partitions > 0 and batch.partitions != live_partitions


def repartition(batch: Batch, live_partitions: int, untraced_partition: int) -> Batch:
    """`batch` with its records split for `live_partitions` (itself when already so)."""
    if not needs_repartition(batch, live_partitions):
        return batch
    joined = b"".join(batch.records[partition] for partition in sorted(batch.records))
    if batch.signal == "spans":
        split = split_traces_bytes(joined, live_partitions)
    else:
        split = split_logs_bytes(joined, live_partitions, untraced_partition)
    if split.rejected:
        # Every item was checked when it was accepted, with the same rules: this would be a bug.
        log.error(
            "splitting a batch again rejected items it had accepted",
            extra={"signal": batch.signal, "rejected": split.rejected},
        )
    return Batch(batch.signal, split.records, batch.items - split.rejected, partitions=live_partitions)
