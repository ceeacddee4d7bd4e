"""The collector's side of Kafka: what it needs of a group consumer, and the real one (aiokafka)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import OffsetAndMetadata

from tether.collector.config import KafkaSourceConfig
from tether.kafka_errors import diagnose, explain_authorization

log = logging.getLogger("tether.collector.kafka")

# What docs/security.md grants the collector; said when Kafka refuses it a topic or its group.
COLLECTOR_ACLS = "Read and Describe on kafka.logs_topic, kafka.spans_topic and kafka.group_id"
# Refusals by ACL: the user authenticated, but may not use a topic or the group. Either can be
# granted while the collector runs, so they are retried, never fatal.
ACL_REFUSALS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError)
MAX_BACKOFF_SECONDS = 30.0


def backoff_seconds(attempt: int) -> float:
    """Full jitter: up to 0.5 s doubled per attempt, at most MAX_BACKOFF_SECONDS."""
    return random.uniform(0, min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(attempt, 8)))


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
    @property
    def refusal(self) -> str | None:
        """Why Kafka refuses this consumer now (the setting to fix), or None."""
        ...

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
        self._refusal: str | None = None
        self._attempts = 0
        self._retry_in = 0.0  # seconds
        self._retry_at = 0.0  # loop time
        self._assignment_refused: object | None = None  # the group's assignment at the refusal
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

    @property
    def refusal(self) -> str | None:
        return self._refusal

    async def start(self) -> None:
        """Join the cluster and learn the topics. A refusal the configuration must fix (TLS, SASL,
        ACLs on the topics) is logged with the key to fix and retried with backoff, the collector
        not ready meanwhile; other failures raise."""
        started = False
        while True:
            try:
                if not started:
                    await super().start()
                    started = True
                await self.refresh_metadata()
                self._access_granted()
                return
            except KafkaConnectionError:
                problem = await diagnose(self._config, self._config.bootstrap_servers)
                if problem is None:
                    raise
                self._refused(problem, "Kafka refused the connection; retrying")
            except ACL_REFUSALS as error:
                self._refused(_explain(error), "Kafka refused the collector's user; retrying")
            await asyncio.sleep(self._retry_in)

    async def refresh_metadata(self) -> None:
        """Learn the topics as they are now (one may have been created or grown since start).
        Raises TopicAuthorizationFailedError for a topic this user may not describe: a listing
        of all topics leaves it out, which would read as a topic that does not exist."""
        topics = (self._config.logs_topic, self._config.spans_topic)
        for topic in topics:
            self._client.add_topic(topic)  # named in the request, so a refusal comes back as one
        await self._client.force_metadata_update()
        refused = set(topics) & set(self._client.cluster.unauthorized_topics)
        if refused:
            raise TopicAuthorizationFailedError(refused)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[KafkaRecord]]:
        """aiokafka's getmany, but an ACL refusal (the group's, or a topic's revoked while
        running) is logged with what to grant and retried with backoff instead of raised.

        aiokafka's group coordinator tries again as soon as its error has been raised here, so
        while refused this does not ask before the backoff is over (unless that retry has joined
        the group meanwhile): it waits up to `timeout_ms` (one poll, so that a stop is not held
        up) and returns nothing."""
        loop = asyncio.get_running_loop()
        if self._refusal is not None and loop.time() < self._retry_at and not self._rejoined():
            await asyncio.sleep(min(timeout_ms / 1000, self._retry_at - loop.time()))
            return {}
        try:
            records: Mapping[TopicPartition, Sequence[KafkaRecord]] = await super().getmany(
                *partitions, timeout_ms=timeout_ms, max_records=max_records
            )
        except ACL_REFUSALS as error:
            self._refused(_explain(error), "Kafka refused the collector's user; retrying")
            return {}
        if self._refusal is not None and (records or self._rejoined()):
            self._access_granted()
        return records

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata] | None = None) -> None:
        """aiokafka's commit; an ACL refusal is logged with what to grant and told as a failed
        commit: the offsets stay uncommitted, for the next commit (or the next owner)."""
        try:
            await super().commit(offsets)
        except ACL_REFUSALS as error:
            problem = _explain(error)
            self._refused(problem, "Kafka refused the offset commit; retrying")
            raise CommitFailedError(problem) from error
        self._access_granted()

    def _assignment(self) -> object | None:
        subscription = self._subscription.subscription
        return subscription.assignment if subscription is not None else None

    def _rejoined(self) -> bool:
        """Whether the group assigned partitions since the last refusal (a new assignment)."""
        assignment = self._assignment()
        return assignment is not None and assignment is not self._assignment_refused

    def _refused(self, problem: str | None, message: str) -> None:
        self._refusal = problem or message
        self._assignment_refused = self._assignment()
        self._attempts += 1
        self._retry_in = backoff_seconds(self._attempts)
        self._retry_at = asyncio.get_running_loop().time() + self._retry_in
        log.error(
            message,
            extra={
                "error": problem,
                "attempt": self._attempts,
                "retry_in_seconds": round(self._retry_in, 2),
            },
        )

    def _access_granted(self) -> None:
        if self._refusal is not None:
            log.info("Kafka accepts the collector's user again", extra={"attempts": self._attempts})
        self._refusal = None
        self._attempts = 0

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


def _explain(error: BaseException) -> str:
    return explain_authorization(error, COLLECTOR_ACLS) or repr(error)
