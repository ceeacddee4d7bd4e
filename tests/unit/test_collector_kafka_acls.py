"""collector.kafka: a collector whose Kafka user lacks ACLs (a topic, its group) says what to
grant, retries with backoff and is not ready, and goes on once they are granted.

aiokafka (the broker's side) is replaced by scripted answers: its consumer's start, getmany and
commit, and its client's metadata; KafkaConsumer's own handling of them is what is tested.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import OffsetAndMetadata

from tests.unit.collector_fakes import LOGS, SPANS, FakeConsumer, FakeElasticsearch, config
from tether.collector.config import KafkaSourceConfig
from tether.collector.kafka import COLLECTOR_ACLS, KafkaConsumer
from tether.collector.metrics import CollectorMetrics
from tether.collector.service import Collector

GROUP = "tether-collector"


@dataclass
class Cluster:
    unauthorized_topics: set[str] = field(default_factory=set)


@dataclass
class Client:
    """aiokafka's client as refresh_metadata uses it: the broker refuses `refusals[0]` next."""

    refusals: list[set[str]]
    cluster: Cluster = field(default_factory=Cluster)
    topics: set[str] = field(default_factory=set)

    def add_topic(self, topic: str) -> None:
        self.topics.add(topic)

    async def force_metadata_update(self) -> bool:
        # A broker refuses only topics named in the request; a listing just leaves them out.
        refused = self.refusals.pop(0) if self.refusals else set()
        self.cluster.unauthorized_topics = refused & self.topics
        return True


@dataclass
class Broker:
    """What aiokafka's consumer answers next: an error to raise, or records."""

    polls: list[KafkaError | dict[TopicPartition, list[Any]]] = field(default_factory=list)
    commits: list[KafkaError | None] = field(default_factory=list)
    asked: int = 0
    assignment: object | None = None  # the group's (a new object at each join), None before


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    broker = Broker()

    async def start(self: AIOKafkaConsumer) -> None:
        pass

    async def getmany(self: AIOKafkaConsumer, *partitions: TopicPartition, **_: Any) -> Any:
        broker.asked += 1
        answer = broker.polls.pop(0) if broker.polls else {}
        if isinstance(answer, KafkaError):
            raise answer
        return answer

    async def commit(self: AIOKafkaConsumer, offsets: Any = None) -> None:
        error = broker.commits.pop(0) if broker.commits else None
        if error is not None:
            raise error

    monkeypatch.setattr(AIOKafkaConsumer, "start", start)
    monkeypatch.setattr(AIOKafkaConsumer, "getmany", getmany)
    monkeypatch.setattr(AIOKafkaConsumer, "commit", commit)
    monkeypatch.setattr(KafkaConsumer, "_assignment", lambda self: broker.assignment)
    monkeypatch.setattr("tether.collector.kafka.backoff_seconds", lambda attempt: 0.05 * attempt)
    yield broker


async def consumer(refusals: list[set[str]]) -> KafkaConsumer:
    made = KafkaConsumer(
        KafkaSourceConfig.model_validate(
            {"bootstrap_servers": "127.0.0.1:1", "logs_topic": LOGS, "spans_topic": SPANS, "group_id": GROUP}
        )
    )
    made._client = Client(refusals)
    made._closed = True  # nothing of aiokafka's runs, so nothing to close
    return made


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(r.error) for r in caplog.records if "refused" in r.getMessage()]  # type: ignore[attr-defined]


async def test_start_retries_refused_topics_naming_them_then_starts(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    made = await consumer([{LOGS, SPANS}, {SPANS}])
    with caplog.at_level(logging.INFO):
        await asyncio.wait_for(made.start(), 5)
    errors = refusals(caplog)
    assert len(errors) == 2 and made.refusal is None
    assert errors[0].startswith("kafka.sasl.username: Kafka refused this user access to topic")
    assert f"'{LOGS}', '{SPANS}'" in errors[0] and f"'{LOGS}'" not in errors[1]
    assert COLLECTOR_ACLS in errors[0] and "does not exist" not in caplog.text
    assert "Kafka accepts the collector's user again" in caplog.text


async def test_start_retries_while_refused_and_says_why(broker: Broker) -> None:
    made = await consumer([{LOGS}] * 1000)
    starting = asyncio.create_task(made.start())
    await asyncio.sleep(0.3)
    assert not starting.done()
    assert made.refusal is not None and f"topic '{LOGS}'" in made.refusal
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting


async def test_a_refused_group_is_retried_after_the_backoff_then_consumed(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    made = await consumer([])
    await made.start()
    records = {TopicPartition(LOGS, 0): ["record"]}
    broker.polls = [GroupAuthorizationFailedError(GROUP), GroupAuthorizationFailedError(GROUP), records]
    with caplog.at_level(logging.INFO):
        assert await made.getmany(timeout_ms=10) == {}
        assert made.refusal is not None and made.refusal.startswith(
            f"kafka.sasl.username: Kafka refused this user access to group '{GROUP}'"
        )
        assert COLLECTOR_ACLS in made.refusal
        # Within the backoff (0.05 s) aiokafka is not asked: each ask makes it try again at once.
        assert await made.getmany(timeout_ms=10) == {} and broker.asked == 1
        polls = 0
        while made.refusal is not None:
            polls += 1
            got = await asyncio.wait_for(made.getmany(timeout_ms=10), 1)
            assert polls < 100
        assert got == records and broker.asked == 3
    assert len(refusals(caplog)) == 2


async def test_a_join_during_the_backoff_ends_it_but_the_same_assignment_does_not(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tether.collector.kafka.backoff_seconds", lambda attempt: 30.0)
    made = await consumer([])
    await made.start()
    broker.assignment = before = object()  # a member of the group, then its ACL is revoked
    broker.polls = [GroupAuthorizationFailedError(GROUP)]
    assert await made.getmany(timeout_ms=10) == {} and made.refusal is not None
    assert await made.getmany(timeout_ms=10) == {} and broker.asked == 1  # still that assignment
    broker.assignment = object()  # aiokafka's retry joined the group again (access granted)
    assert broker.assignment is not before
    assert await asyncio.wait_for(made.getmany(timeout_ms=10), 1) == {}
    assert broker.asked == 2 and made.refusal is None  # without waiting out the 30 s


async def test_a_refused_commit_fails_as_a_commit_and_says_what_to_grant(broker: Broker) -> None:
    made = await consumer([])
    await made.start()
    broker.commits = [GroupAuthorizationFailedError(GROUP), None]
    offsets = {TopicPartition(LOGS, 0): OffsetAndMetadata(5, "")}
    with pytest.raises(CommitFailedError) as failed:  # the Committer's: stays uncommitted, retried
        await made.commit(offsets)
    assert f"group '{GROUP}'" in str(failed.value) and made.refusal is not None
    await made.commit(offsets)  # granted again
    assert made.refusal is None


async def test_a_collector_is_not_ready_while_kafka_refuses_its_consumer() -> None:
    fake = FakeConsumer({LOGS: 4, SPANS: 4})
    collector = Collector(config(), fake, FakeElasticsearch(), None, CollectorMetrics())
    await collector.start()
    assert collector.ready()
    fake.refusal = "kafka.sasl.username: Kafka refused this user access to group 'g'"
    assert not collector.ready()
    fake.refusal = None
    assert collector.ready()


async def test_a_topic_refused_while_consuming_is_retried_too(broker: Broker) -> None:
    made = await consumer([])
    await made.start()
    broker.polls = [TopicAuthorizationFailedError({LOGS})]  # e.g. Read revoked while running
    assert await made.getmany(timeout_ms=10) == {}
    assert made.refusal is not None and f"topic '{LOGS}'" in made.refusal
