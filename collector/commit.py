"""Committing offsets: each partition of both topics up to its watermark, the first record whose
parts are not all acknowledged downstream (Elasticsearch and, for spans, Jaeger)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata

from tether import failpoints
from tether.collector.config import KafkaSourceConfig
from tether.collector.metrics import CollectorMetrics
from tether.collector.offsets import OffsetTracker
from tether.schemas.records import Signal

log = logging.getLogger("tether.collector")

COMMIT_INTERVAL_SECONDS = 0.5


class OffsetCommitter(Protocol):
    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None: ...


class Committer:
    def __init__(
        self,
        consumer: OffsetCommitter,
        kafka: KafkaSourceConfig,
        metrics: CollectorMetrics,
        *,
        interval: float = COMMIT_INTERVAL_SECONDS,
    ) -> None:
        self.consumer = consumer
        self.topics: dict[Signal, str] = {"logs": kafka.logs_topic, "spans": kafka.spans_topic}
        self.metrics = metrics
        self.interval = interval
        self._last = 0.0

    def due(self, now: float) -> bool:
        """Whether to commit now (`now`: loop time): at most once per `interval`."""
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False

    async def commit(self, trackers: Mapping[int, Mapping[Signal, OffsetTracker]]) -> None:
        """Commit the watermark of every partition's trackers (by partition number, by signal)."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for partition, by_signal in trackers.items():
            for signal, tracker in by_signal.items():
                watermark = tracker.watermark()
                if watermark is not None:
                    offsets[TopicPartition(self.topics[signal], partition)] = OffsetAndMetadata(watermark, "")
        if not offsets:
            return
        failpoints.reach("collector.before_commit")  # Elasticsearch acked up to here
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as error:
            # The group moved on without us (e.g. a session timeout): the partitions' new owner
            # resumes from the last committed offsets and replays the rest under the same ids.
            self.metrics.commit_failures.inc()
            log.warning(
                "offset commit refused by the group; the next owner replays", extra={"error": str(error)}
            )
            return
        self.metrics.commits.inc()
