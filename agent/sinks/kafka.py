"""The Kafka sink: an idempotent aiokafka producer (acks=all) whose send returns only once acked.

It implements the `Sink` protocol: aiokafka's errors leave it as SinkUnavailable, or SinkReset
when the producer had to be replaced, so that delivery needs nothing of aiokafka. A send refused
by Kafka's ACLs (the user may describe a topic but not write to it) is SinkUnavailable too, as it
is spooled and retried, and `refusal` says what to grant until a send to that topic succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaConnectionError,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAuthorizationFailedError,
    UnknownProducerId,
)

from tether.agent.config import KafkaSinkConfig
from tether.agent.sinks import kafka_batch
from tether.agent.sinks.sink import SinkReset, SinkUnavailable
from tether.kafka_errors import KafkaSecurityError, diagnose, explain_authorization
from tether.schemas.records import LOGS_SCHEMA, SCHEMA_HEADER, SPANS_SCHEMA, Signal

log = logging.getLogger("tether.agent.kafka")

# After these the idempotent producer's sequence state no longer matches the broker's (typically
# after a broker restart with sends abandoned mid-flight): only a new producer id recovers.
PRODUCER_STATE_ERRORS = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
)

# What docs/security.md grants the agent; said when Kafka refuses it a topic (or, before Kafka
# 3.0, the cluster's IdempotentWrite).
AGENT_ACLS = "Write and Describe on kafka.logs_topic and kafka.spans_topic"
ACL_REFUSALS = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)

_SCHEMAS: dict[Signal, bytes] = {"logs": LOGS_SCHEMA, "spans": SPANS_SCHEMA}


class PartitionMismatchError(RuntimeError):
    pass


class KafkaSink:
    def __init__(self, config: KafkaSinkConfig) -> None:
        self.config = config
        self.partitions = 0
        self._topics: dict[Signal, str] = {"logs": config.logs_topic, "spans": config.spans_topic}
        self._producer = self._new_producer()
        self._refusals: dict[str, str] = {}  # topic -> what Kafka refused and what to grant

    @property
    def refusal(self) -> str | None:
        """Why Kafka refuses the agent's sends (the setting to fix), or None."""
        return "; ".join(self._refusals[topic] for topic in sorted(self._refusals)) or None

    def _new_producer(self) -> AIOKafkaProducer:
        config = self.config
        producer = AIOKafkaProducer(
            bootstrap_servers=config.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            compression_type=None if config.compression == "none" else config.compression,
            linger_ms=config.linger_ms,
            max_batch_size=min(config.max_request_bytes, 1024 * 1024),
            max_request_size=config.max_request_bytes,
            request_timeout_ms=config.request_timeout_ms,
            **config.aiokafka_security_kwargs(),
        )
        level = config.lz4_level if config.compression == "lz4" else config.zstd_level
        kafka_batch.install(producer, config.compression, level)
        return producer

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaConnectionError as error:  # aiokafka keeps the cause to its log: find it
            problem = await diagnose(self.config, self.config.bootstrap_servers)
            if problem is None:
                raise
            raise KafkaSecurityError(problem) from error
        counts = {
            t: len(await self._producer.partitions_for(t))
            for t in (self.config.logs_topic, self.config.spans_topic)
        }
        if len(set(counts.values())) != 1:
            await self._producer.stop()
            raise PartitionMismatchError(
                f"topics must have the same partition count so a trace's logs and spans share a "
                f"partition number, but found {counts}; add partitions to the smaller topic"
            )
        self.partitions = next(iter(counts.values()))

    async def stop(self) -> None:
        await self._producer.stop()  # flushes what is pending

    def topic(self, signal: Signal) -> str:
        return self._topics[signal]

    async def send(self, signal: Signal, records: Mapping[int, bytes]) -> None:
        """Send one record per partition; return when Kafka has acknowledged every one."""
        if not self.partitions:  # not started: agent/kafka_connector.py is still trying
            raise SinkUnavailable(f"not connected to Kafka ({self.config.bootstrap_servers})")
        headers = [(SCHEMA_HEADER, _SCHEMAS[signal])]
        topic = self._topics[signal]
        producer = self._producer
        try:
            try:
                pending = [
                    await producer.send(topic, value, partition=partition, headers=headers)
                    for partition, value in records.items()
                ]
                await asyncio.gather(*pending)
            except PRODUCER_STATE_ERRORS as error:
                await self._replace_producer(producer, error)
                raise SinkReset("Kafka producer state lost; a new producer is ready") from error
        except ACL_REFUSALS as error:
            raise SinkUnavailable(self._refused(topic, error)) from error
        except KafkaError as error:  # including a replacement producer that could not start
            raise SinkUnavailable("Kafka did not acknowledge") from error
        if self._refusals.pop(topic, None) is not None:
            log.info("Kafka accepts the agent's sends again", extra={"topic": topic})

    def _refused(self, topic: str, error: KafkaError) -> str:
        """Remember (and log, the first time) that Kafka refuses the user `topic`; what to grant."""
        problem = explain_authorization(error, AGENT_ACLS) or repr(error)
        if topic not in self._refusals:
            log.error(
                "Kafka refused the agent's sends; spooling and retrying",
                extra={"error": problem, "topic": topic},
            )
        self._refusals[topic] = problem
        return problem

    async def _replace_producer(self, broken: AIOKafkaProducer, error: Exception) -> None:
        if broken is not self._producer:
            return  # another send already replaced it
        log.warning("Kafka producer state lost; starting a new producer", extra={"error": repr(error)})
        self._producer = self._new_producer()
        await self._producer.start()
        await _stop_quietly(broken)


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 5)
    except Exception as error:  # it is broken already; nothing of ours waits on it
        log.debug("old producer did not stop cleanly", extra={"error": repr(error)})
