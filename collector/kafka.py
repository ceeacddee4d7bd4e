"""The collector's side of Kafka: what it needs of a group consumer, and the real one (aiokafka)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import OffsetAndMetadata

from tether.collector.config import KafkaSourceConfig
from tether.kafka_errors import diagnose

log = logging.getLogger("tether.collector.kafka")


class PartitionCountMismatchError(RuntimeError):
    pass


class KafkaRecord(Protocol):
    """What the collector reads of a consumed record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes: ...
    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch: when the record was produced (or appended)."""
        ...


class GroupConsumer(Protocol):
    """A member of the consumer group over the logs and spans topics, committing by hand."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def refresh_metadata(self) -> None: ...
    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None: ...
    async def getmany(self, *, timeout_ms: int) -> Mapping[TopicPartition, Sequence[KafkaRecord]]: ...
    def lag(self, partition: TopicPartition) -> int | None:
        """Records behind the end of an assigned partition; None while unknown (not fetched yet)."""
        ...

    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def paused(self) -> set[TopicPartition]: ...
    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None: ...


class KafkaConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """aiokafka's consumer as the collector runs it: range assignment (the same partition numbers
    of both topics to one member), offsets committed only by the collector."""

    def __init__(self, config: KafkaSourceConfig) -> None:
        self._config = config
        super().__init__(
            bootstrap_servers=config.bootstrap_servers,
            group_id=config.group_id,
            enable_auto_commit=False,
            auto_offset_reset=config.auto_offset_reset,
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_poll_records=config.max_poll_records,
            fetch_max_bytes=config.fetch_max_bytes,
            max_partition_fetch_bytes=config.max_partition_fetch_bytes,
            **config.aiokafka_security_kwargs(),
        )

    async def start(self) -> None:
        """Join the cluster. A refusal the configuration must fix (TLS, SASL) is logged with the key
        to fix and retried with backoff, the collector not ready meanwhile; other failures raise."""
        attempt = 0
        while True:
            try:
                await super().start()
                return
            except KafkaConnectionError:
                problem = await diagnose(self._config, self._config.bootstrap_servers)
                if problem is None:
                    raise
            attempt += 1
            delay = random.uniform(0, min(30.0, 0.5 * 2 ** min(attempt, 8)))
            log.error(
                "Kafka refused the connection; retrying",
                extra={"error": problem, "attempt": attempt, "retry_in_seconds": round(delay, 2)},
            )
            await asyncio.sleep(delay)

    async def refresh_metadata(self) -> None:
        """Learn the topics as they are now (one may have been created or grown since start)."""
        await self._client.force_metadata_update()

    def lag(self, partition: TopicPartition) -> int | None:
        highwater: int | None = self.highwater(partition)
        if highwater is None:
            return None
        # aiokafka's position() is a coroutine that waits for a position to be known; the collector
        # needs it at once, and None (not known yet) is an answer: read the assignment's state.
        subscription = self._subscription.subscription
        assignment = subscription.assignment if subscription is not None else None
        if assignment is None or partition not in assignment.tps:
            return None
        state = assignment.state_value(partition)
        if not state.has_valid_position:
            return None
        position: int = state.position
        return max(highwater - position, 0)


async def check_copartitioned(consumer: GroupConsumer, topics: Sequence[str]) -> None:
    """A trace's logs and spans meet in one collector only if both topics have as many partitions."""
    counts: dict[str, int] = {}
    await consumer.refresh_metadata()
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise PartitionCountMismatchError(f"topic {topic!r} does not exist on the Kafka cluster")
        counts[topic] = len(partitions)
    if len(set(counts.values())) != 1:
        raise PartitionCountMismatchError(
            f"the logs and spans topics must have the same partition count, found {counts}: "
            "add partitions to the smaller one (kafka-topics --alter --partitions N)"
        )
