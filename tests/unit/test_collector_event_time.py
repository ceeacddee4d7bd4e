"""Correlation in event time: a partition's clock from both topics, and a collector catching up on a
backlog pausing the topic that reads ahead, so a trace's logs wait for its spans however far
behind the consumer is."""

from __future__ import annotations

import dataclasses
import os

from aiokafka import TopicPartition

from tests.unit.collector_fakes import (
    LOGS,
    SPANS,
    T0,
    FakeConsumer,
    FakeElasticsearch,
    Record,
    config,
    log_record,
    poll,
    span_record,
    spin,
)
from tether.collector.event_time import PartitionClock
from tether.collector.metrics import CollectorMetrics
from tether.collector.service import Collector
from tether.schemas.indices import LOGS_ALIAS

T0_MS = T0 // 1_000_000
WALL_MS = T0_MS + 3_600_000  # an hour after the backlog was written


def test_the_clock_is_the_older_topics_position_until_both_are_caught_up() -> None:
    clock = PartitionClock(slack_ms=1000)
    clock.started(0.0)
    assert clock.now_ms(WALL_MS, 0.0) == 0  # nothing read: nothing may be emitted
    clock.consumed("logs", T0_MS + 20_000, 1.0)
    clock.consumed("spans", T0_MS + 2_000, 1.0)
    assert clock.now_ms(WALL_MS, 1.0) == T0_MS + 2_000
    clock.caught_up("spans", True, 1.0)
    assert clock.now_ms(WALL_MS, 1.0) == T0_MS + 20_000
    clock.caught_up("logs", True, 1.0)
    assert clock.now_ms(WALL_MS, 1.0) == WALL_MS  # live: the wall clock


def test_the_topic_read_ahead_by_more_than_the_slack_is_the_one_to_pause() -> None:
    clock = PartitionClock(slack_ms=1000)
    clock.started(0.0)
    clock.consumed("logs", T0_MS + 1_500, 0.0)
    assert clock.ahead(0.0) == "logs"  # the spans topic has not been read at all yet
    clock.consumed("spans", T0_MS + 1_000, 0.0)
    assert clock.ahead(0.0) is None  # within the slack
    clock.consumed("spans", T0_MS + 9_000, 0.0)
    assert clock.ahead(0.0) == "spans"
    clock.caught_up("logs", True, 0.0)
    assert clock.ahead(0.0) is None  # nothing more to read from logs: spans go on


def test_a_stalled_topic_stops_holding_the_clock_back() -> None:
    clock = PartitionClock(slack_ms=1000, stall_seconds=30)
    clock.started(0.0)
    clock.consumed("logs", T0_MS + 5_000, 10.0)
    assert clock.ahead(10.0) == "logs" and clock.now_ms(WALL_MS, 10.0) == 0
    assert clock.ahead(31.0) is None  # spans read nothing for 31 s: no longer waited for
    assert clock.now_ms(WALL_MS, 31.0) == T0_MS + 5_000


def at(record: Record, offset_ms: int) -> Record:
    return dataclasses.replace(record, timestamp=T0_MS + offset_ms)


async def test_a_backlog_of_logs_waits_for_the_spans_written_beside_them() -> None:
    """The logs topic is read 20 event-seconds ahead of the spans: its partition is paused, and a
    line is joined to its span although the span is read three polls later."""
    consumer, es = FakeConsumer(), FakeElasticsearch()
    c = Collector(config(wait_seconds=5), consumer, es, None, CollectorMetrics(), commit_interval=0)
    consumer.lags = {TopicPartition(LOGS, 0): 1000, TopicPartition(SPANS, 0): 1000}
    trace, span = os.urandom(16), os.urandom(8)
    first_logs = [at(log_record(0, trace, span), 0)] + [
        at(log_record(i, os.urandom(16), os.urandom(8)), i * 1000) for i in range(1, 21)
    ]
    consumer.polls.append(poll(*first_logs))
    await c.poll()
    assert consumer.paused() == {TopicPartition(LOGS, 0)}
    consumer.polls.append(poll(at(span_record(0, trace, span), 1000)))
    await c.poll()
    assert consumer.paused() == {TopicPartition(LOGS, 0)}  # spans at +1 s, logs at +20 s
    consumer.polls.append(poll(at(span_record(1, os.urandom(16), os.urandom(8)), 19_500)))
    await c.poll()
    await spin()
    assert consumer.paused() == set()  # within the slack again
    logs = {doc.doc_id: doc.source for doc in es.received if doc.alias == LOGS_ALIAS}
    assert logs["agent:fp:0"]["tether"]["correlation"] == "span"
    # the clock is at +19.5 s: traces first seen after +14.5 s are still held
    assert sorted(logs) == sorted(f"agent:fp:{i}" for i in range(15))


async def test_live_the_window_is_the_wall_clock() -> None:
    consumer, es = FakeConsumer(), FakeElasticsearch()
    c = Collector(config(wait_seconds=0), consumer, es, None, CollectorMetrics(), commit_interval=0)
    consumer.polls.append(poll(log_record(0, os.urandom(16), os.urandom(8))))  # stamped "now"
    await c.poll()
    await spin()
    assert consumer.paused() == set()
    assert [doc.source["tether"]["correlation"] for doc in es.received if doc.alias == LOGS_ALIAS] == ["none"]


async def test_a_poll_of_logs_before_any_span_is_not_read_past_the_clock() -> None:
    """At start-up the logs topic's first fetch can come before the spans topic's, and one poll
    holds many seconds of it: those records wait (their partition paused) for the spans, so no
    trace is emitted early by the pending bound before its span was read."""
    consumer, es = FakeConsumer(), FakeElasticsearch()
    # A bound of 3 pending traces, and no repair: a span read after its lines were emitted could
    # not join them any more.
    settings = config(wait_seconds=5, correlation={"max_pending_traces": 3, "max_repairable_logs": 0})
    metrics = CollectorMetrics()
    c = Collector(settings, consumer, es, None, metrics, commit_interval=0)
    traces = [(os.urandom(16), os.urandom(8)) for _ in range(20)]
    consumer.lags = {TopicPartition(LOGS, 0): 1000, TopicPartition(SPANS, 0): None}  # spans not fetched
    consumer.polls.append(poll(*(at(log_record(i, *t), i * 1000) for i, t in enumerate(traces))))
    await c.poll()
    assert consumer.paused() == {TopicPartition(LOGS, 0)}  # 20 event-seconds of logs, no span yet
    consumer.lags[TopicPartition(SPANS, 0)] = 1000
    consumer.polls.append(poll(*(at(span_record(i, *t), i * 1000 + 100) for i, t in enumerate(traces))))
    await c.poll()
    consumer.lags = {}  # caught up: the wall clock ends every window
    await c.poll()
    await spin()
    logs = [doc.source["tether"]["correlation"] for doc in es.received if doc.alias == LOGS_ALIAS]
    assert logs == ["span"] * 20
    assert c.records.stats.late_spans == 0 and c.records.stats.evicted == 17
    assert metrics.records_in.labels(LOGS)._value.get() == 20  # each record consumed once
