"""KafkaSink as a `Sink`: where records go, and aiokafka's errors as SinkUnavailable or SinkReset.

The aiokafka producer is replaced by a stand-in (no broker); tests/unit/test_agent_kafka_batch.py
sends through the real broker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    OutOfOrderSequenceNumber,
    TopicAuthorizationFailedError,
)

from tether.agent.config import KafkaSinkConfig
from tether.agent.sinks.kafka import AGENT_ACLS, KafkaSink
from tether.agent.sinks.sink import SinkReset, SinkUnavailable
from tether.schemas.records import LOGS_SCHEMA, SCHEMA_HEADER, SPANS_SCHEMA


class FakeProducer:
    """Acknowledges every record, or fails each acknowledgement with `error`."""

    def __init__(self, error: KafkaError | None = None, start_error: KafkaError | None = None) -> None:
        self.error = error
        self.start_error = start_error
        self.sent: list[tuple[str, bytes, int, list[tuple[str, bytes]]]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(
        self, topic: str, value: bytes, *, partition: int, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        self.sent.append((topic, value, partition, headers))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.error is None:
            ack.set_result(None)
        else:
            ack.set_exception(self.error)
        return ack


def _sink(monkeypatch: pytest.MonkeyPatch, *producers: FakeProducer) -> KafkaSink:
    queue = list(producers)

    def new_producer(self: KafkaSink) -> Any:
        return queue.pop(0)

    monkeypatch.setattr(KafkaSink, "_new_producer", new_producer)
    sink = KafkaSink(KafkaSinkConfig(bootstrap_servers="unused:9092", logs_topic="l", spans_topic="s"))
    sink.partitions = 4  # as start() leaves it: these producers have no metadata to ask
    return sink


async def test_a_sink_not_started_is_unavailable_without_asking_its_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = FakeProducer()
    sink = _sink(monkeypatch, producer)
    sink.partitions = 0  # start() has not succeeded (Kafka unreachable so far)
    with pytest.raises(SinkUnavailable, match="unused:9092"):
        await sink.send("logs", {0: b"x"})
    assert producer.sent == []


async def test_records_go_to_the_signal_s_topic_with_its_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer()
    sink = _sink(monkeypatch, producer)
    assert (sink.topic("logs"), sink.topic("spans")) == ("l", "s")
    await sink.send("logs", {0: b"a", 3: b"b"})
    await sink.send("spans", {1: b"c"})
    assert producer.sent == [
        ("l", b"a", 0, [(SCHEMA_HEADER, LOGS_SCHEMA)]),
        ("l", b"b", 3, [(SCHEMA_HEADER, LOGS_SCHEMA)]),
        ("s", b"c", 1, [(SCHEMA_HEADER, SPANS_SCHEMA)]),
    ]


async def test_a_kafka_error_is_sink_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(error=KafkaConnectionError("down"))
    sink = _sink(monkeypatch, producer)
    with pytest.raises(SinkUnavailable) as raised:
        await sink.send("logs", {0: b"a"})
    assert isinstance(raised.value.__cause__, KafkaConnectionError)
    assert not producer.stopped  # the producer reconnects by itself


async def test_lost_producer_state_replaces_the_producer_and_is_sink_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken, fresh = FakeProducer(error=OutOfOrderSequenceNumber()), FakeProducer()
    sink = _sink(monkeypatch, broken, fresh)
    with pytest.raises(SinkReset) as raised:
        await sink.send("spans", {0: b"a"})
    assert isinstance(raised.value.__cause__, OutOfOrderSequenceNumber)
    assert broken.stopped and fresh.started
    await sink.send("spans", {0: b"a"})  # the retry goes through the new producer
    assert len(fresh.sent) == 1


async def test_a_replacement_that_cannot_start_is_sink_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = FakeProducer(error=OutOfOrderSequenceNumber())
    unstartable = FakeProducer(start_error=KafkaConnectionError("still down"))
    sink = _sink(monkeypatch, broken, unstartable)
    with pytest.raises(SinkUnavailable) as raised:
        await sink.send("logs", {0: b"a"})
    assert isinstance(raised.value.__cause__, KafkaConnectionError)


async def test_a_send_refused_by_acls_says_what_to_grant_until_a_send_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Describe but no Write on the topic: the metadata is there, every produce is refused.
    producer = FakeProducer(error=TopicAuthorizationFailedError("l"))
    sink = _sink(monkeypatch, producer)
    assert sink.refusal is None
    with pytest.raises(SinkUnavailable) as raised:  # spooled and retried, like Kafka down
        await sink.send("logs", {0: b"a"})
    assert str(raised.value).startswith("kafka.sasl.username: Kafka refused this user access to topic 'l'")
    assert AGENT_ACLS in str(raised.value) and isinstance(
        raised.value.__cause__, TopicAuthorizationFailedError
    )
    assert sink.refusal == str(raised.value)
    producer.error = None  # Write granted
    await sink.send("spans", {0: b"s"})
    assert sink.refusal is not None  # a send to the other topic says nothing of this one
    await sink.send("logs", {0: b"a"})
    assert sink.refusal is None
