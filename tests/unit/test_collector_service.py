"""collector.service: commits, rebalances and backpressure, against fakes of Kafka and the sinks.

A Kafka offset may be committed only once Elasticsearch and Jaeger acknowledged everything built
from the records before it; these tests hold sink calls open and answer them one by one.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os

import pytest
from aiokafka import TopicPartition

from tests.unit.collector_fakes import (
    LOGS,
    SPANS,
    FakeConsumer,
    FakeElasticsearch,
    FakeJaeger,
    Record,
    config,
    log_record,
    poll,
    span_record,
    span_request,
    spin,
)
from tether.collector.config import CollectorConfig
from tether.collector.documents import span_documents
from tether.collector.kafka import PartitionCountMismatchError
from tether.collector.metrics import CollectorMetrics
from tether.collector.service import Collector
from tether.schemas.indices import DEADLETTER_ALIAS, LOGS_ALIAS, SPANS_ALIAS, TRACES_ALIAS


def collector(
    consumer: FakeConsumer,
    elasticsearch: FakeElasticsearch,
    jaeger: FakeJaeger | None,
    settings: CollectorConfig | None = None,
) -> Collector:
    """A Collector committing at every poll."""
    return Collector(
        settings or config(), consumer, elasticsearch, jaeger, CollectorMetrics(), commit_interval=0
    )


def sample(c: Collector, name: str, **labels: str) -> float | None:
    return c.metrics.registry.get_sample_value(name, labels)


async def next_poll(c: Collector, consumer: FakeConsumer, *records: Record) -> None:
    """Let answered deliveries finish, then poll `records` (and commit)."""
    await spin()
    consumer.polls.append(poll(*records))
    await c.poll()
    await spin()


async def test_commits_go_up_to_the_first_record_not_acked_by_elasticsearch_and_jaeger() -> None:
    consumer, es, jaeger = FakeConsumer(), FakeElasticsearch(hold=True), FakeJaeger(hold=True)
    c = collector(consumer, es, jaeger)
    await next_poll(c, consumer, span_record(0, os.urandom(16), os.urandom(8)))
    await next_poll(c, consumer, span_record(1, os.urandom(16), os.urandom(8)))
    assert len(es.calls) == len(jaeger.calls) == 2  # one delivery per poll, both in flight
    assert consumer.committed == {(SPANS, 0): 0}

    es.calls[1].answer()
    jaeger.calls[1].answer()  # the second record is done, the first is not
    await next_poll(c, consumer)
    assert consumer.committed == {(SPANS, 0): 0}

    es.calls[0].answer()  # Elasticsearch has the first record's documents, Jaeger not its spans
    await next_poll(c, consumer)
    assert consumer.committed == {(SPANS, 0): 0}

    jaeger.calls[0].answer()
    await next_poll(c, consumer)
    assert consumer.committed == {(SPANS, 0): 2}
    assert c.deliveries.in_flight == 0
    assert sample(c, "tether_collector_documents_out_total", index=SPANS_ALIAS) == 2
    assert sample(c, "tether_collector_documents_out_total", index=TRACES_ALIAS) == 2


async def test_a_spans_record_is_committed_once_jaeger_has_it_too() -> None:
    consumer, es, jaeger = FakeConsumer(), FakeElasticsearch(hold=True), FakeJaeger(hold=True)
    c = collector(consumer, es, jaeger, config(wait_seconds=0.05))
    await next_poll(c, consumer, span_record(0, os.urandom(16), os.urandom(8)))
    assert (jaeger.calls, es.calls) == ([], [])  # held with its trace, for Jaeger too (span events)
    await asyncio.sleep(0.06)
    await next_poll(c, consumer)  # the trace's window is over: its documents and spans go out
    assert (len(jaeger.calls), len(es.calls)) == (1, 1)
    es.calls[0].answer()
    await next_poll(c, consumer)
    assert consumer.committed == {(SPANS, 0): 0}  # Elasticsearch has it all, Jaeger not yet

    jaeger.calls[0].answer()
    await next_poll(c, consumer)
    assert consumer.committed == {(SPANS, 0): 1}


async def test_refused_documents_are_committed_once_their_dead_letters_are_indexed() -> None:
    consumer, es = FakeConsumer(), FakeElasticsearch(hold=True)
    c = collector(consumer, es, None)  # Jaeger disabled: Elasticsearch alone acknowledges spans
    trace, span_id = os.urandom(16), os.urandom(8)
    [span] = span_documents(span_request(trace, span_id))
    es.refuse = {span.doc_id}
    await next_poll(c, consumer, span_record(0, trace, span_id))
    es.calls[0].answer()  # the bulk: its span refused
    await next_poll(c, consumer)
    [letter] = es.calls[1].payload
    assert (letter.alias, letter.doc_id) == (DEADLETTER_ALIAS, f"{SPANS_ALIAS}:{span.doc_id}")
    assert consumer.committed == {(SPANS, 0): 0}  # not before the letter is indexed

    es.calls[1].answer()
    await next_poll(c, consumer)
    assert consumer.committed == {(SPANS, 0): 1}


async def test_undecodable_records_are_dead_lettered_and_committed(caplog: pytest.LogCaptureFixture) -> None:
    consumer, es, jaeger = FakeConsumer(), FakeElasticsearch(hold=True), FakeJaeger()
    c = collector(consumer, es, jaeger)
    garbage = b"\xff\xff\xff\xff"
    with caplog.at_level(logging.ERROR, logger="tether.collector"):
        await next_poll(
            c,
            consumer,
            log_record(0, partition=1),
            Record(LOGS, 1, 1, garbage),
            Record(SPANS, 1, 7, garbage),
        )
    assert [r.message for r in caplog.records].count("undecodable Kafka record skipped") == 2
    [call] = es.calls
    letters = {o.doc_id: o for o in call.payload if o.alias == DEADLETTER_ALIAS}
    assert set(letters) == {f"{LOGS}:1:1", f"{SPANS}:1:7"}
    assert letters[f"{SPANS}:1:7"].source["deadletter"]["original"] == base64.b64encode(garbage).decode()
    assert sample(c, "tether_collector_deadlettered_total", index="undecodable-logs") == 1
    assert sample(c, "tether_collector_deadlettered_total", index="undecodable-spans") == 1
    assert jaeger.calls == []  # nor to Jaeger
    assert consumer.committed == {(LOGS, 1): 0, (SPANS, 1): 7}  # not before the letters are indexed

    call.answer()
    await next_poll(c, consumer)
    assert consumer.committed == {(LOGS, 1): 2, (SPANS, 1): 8}


async def test_a_refused_commit_is_counted_and_polling_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    consumer, es = FakeConsumer(), FakeElasticsearch()
    c = collector(consumer, es, FakeJaeger())
    consumer.refuse_commits = 1
    with caplog.at_level(logging.WARNING, logger="tether.collector"):
        await next_poll(c, consumer, log_record(0))
    assert "offset commit refused by the group; the next owner replays" in caplog.messages
    assert sample(c, "tether_collector_commit_failures_total") == 1
    assert sample(c, "tether_collector_commits_total") == 0
    assert consumer.committed == {}

    await next_poll(c, consumer, log_record(1))
    assert consumer.committed == {(LOGS, 0): 1}  # what was acknowledged meanwhile
    assert sample(c, "tether_collector_commits_total") == 1


async def test_a_revoked_partition_leaves_traces_in_their_window_to_the_next_reader() -> None:
    """Emitting a trace still in its window would let two owners decide it in two parts (tail
    sampling, correlation): it is let go unemitted and uncommitted, and the next reader replays it
    whole."""
    consumer, es, jaeger = FakeConsumer(), FakeElasticsearch(), FakeJaeger()
    c = collector(consumer, es, jaeger, config(wait_seconds=60))  # traces held past the test
    trace, span = os.urandom(16), os.urandom(8)
    records = (log_record(0, trace, span, partition=2), span_record(0, trace, span, partition=2))
    await next_poll(c, consumer, *records)
    await next_poll(c, consumer, log_record(0, partition=3))  # untraced: indexed at once
    await next_poll(c, consumer)
    assert consumer.committed == {(LOGS, 2): 0, (SPANS, 2): 0, (LOGS, 3): 1}  # the trace is held

    await c.on_revoked({TopicPartition(LOGS, 2), TopicPartition(SPANS, 2), TopicPartition(LOGS, 9)})
    await spin()
    assert [o.alias for o in es.received] == [LOGS_ALIAS]  # the untraced line only
    assert consumer.committed == {(LOGS, 2): 0, (SPANS, 2): 0, (LOGS, 3): 1}
    assert set(c.records.partitions) == {3}  # partition 3 was not revoked
    assert c.records.budget.traces == 0 and c.records.budget.bytes == 0

    next_reader = collector(consumer, es, jaeger, config(wait_seconds=0))
    await next_poll(next_reader, consumer, *records)  # read again from the committed offsets
    await next_poll(next_reader, consumer)
    [log] = [
        o for o in es.received if o.alias == LOGS_ALIAS and o.source["tether"]["correlation"] != "untraced"
    ]
    assert log.source["tether"]["correlation"] == "span"  # whole: the line met its span
    assert consumer.committed == {(LOGS, 2): 1, (SPANS, 2): 1, (LOGS, 3): 1}


async def test_late_acks_of_a_revoked_partition_do_not_touch_its_next_assignment() -> None:
    consumer, es = FakeConsumer(), FakeElasticsearch()
    c = collector(consumer, es, FakeJaeger())
    es.fail = 1  # the first delivery fails: its record stays unacknowledged
    await next_poll(c, consumer, log_record(0, partition=1))
    stale = [output.ack for output in es.calls[0].payload]
    assert consumer.committed == {(LOGS, 1): 0}
    await c.on_revoked({TopicPartition(LOGS, 1)})
    assert consumer.committed == {(LOGS, 1): 0}

    es.hold = True  # reassigned: the record is read again, its delivery in flight
    await next_poll(c, consumer, log_record(0, partition=1))
    for ack in stale:  # the old delivery acknowledges after all
        assert ack is not None
        ack.done()
    await next_poll(c, consumer)
    assert consumer.committed == {(LOGS, 1): 0}  # the new assignment's record is not indexed yet

    es.calls[-1].answer()
    await next_poll(c, consumer)
    assert consumer.committed == {(LOGS, 1): 1}


async def test_deliveries_beyond_max_concurrent_bulks_hold_polling_back() -> None:
    consumer, es = FakeConsumer(), FakeElasticsearch(hold=True)
    c = collector(consumer, es, None, config(bulk_max_docs=1, max_concurrent_bulks=2))
    consumer.polls.append(poll(log_record(0), log_record(1), log_record(2)))  # a delivery each
    polling = asyncio.create_task(c.poll())
    await spin()
    assert not polling.done() and len(es.calls) == 2
    assert sample(c, "tether_collector_inflight_documents") == 2

    es.calls[0].answer()
    await spin()
    assert polling.done() and len(es.calls) == 3
    await polling
    for call in es.calls[1:]:
        call.answer()
    await next_poll(c, consumer)
    assert consumer.committed == {(LOGS, 0): 3}
    assert sample(c, "tether_collector_inflight_documents") == 0


async def test_stop_indexes_what_is_due_and_leaves_the_rest_uncommitted() -> None:
    consumer, es, jaeger = FakeConsumer(), FakeElasticsearch(), FakeJaeger()
    c = collector(consumer, es, jaeger, config(wait_seconds=60))
    trace, span = os.urandom(16), os.urandom(8)
    await next_poll(c, consumer, log_record(4, trace, span), span_record(6, trace, span))
    await next_poll(c, consumer, log_record(5))  # untraced: indexed at once
    await c.stop()
    assert [o.alias for o in es.received] == [LOGS_ALIAS]
    assert consumer.committed == {(LOGS, 0): 4, (SPANS, 0): 6}  # the next start reads the trace again
    assert consumer.stopped and es.closed and jaeger.closed
    assert sample(c, "tether_collector_inflight_documents") == 0


async def test_start_subscribes_to_copartitioned_topics_only() -> None:
    consumer = FakeConsumer({LOGS: 4, SPANS: 4})
    c = collector(consumer, FakeElasticsearch(), None)
    assert not c.ready()
    await c.start()
    assert consumer.subscribed == [LOGS, SPANS] and consumer.listener is not None
    assert c.ready()

    for counts in ({LOGS: 4, SPANS: 8}, {LOGS: 4}):
        with pytest.raises(PartitionCountMismatchError):
            await collector(FakeConsumer(counts), FakeElasticsearch(), None).start()


async def test_stop_gives_up_on_a_sink_that_never_answers_and_commits_nothing_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Jaeger refusing until its setting is fixed: SIGTERM must still end the collector.
    monkeypatch.setattr("tether.collector.service.STOP_DELIVERY_GRACE_SECONDS", 0.2)
    consumer, es, jaeger = FakeConsumer(), FakeElasticsearch(), FakeJaeger(hold=True)
    c = collector(consumer, es, jaeger, config(wait_seconds=0))
    trace, span = os.urandom(16), os.urandom(8)
    await next_poll(c, consumer, span_record(6, trace, span))
    assert len(jaeger.calls) == 1  # its window is over: exported, never answered
    await asyncio.wait_for(c.stop(), 5)
    assert consumer.committed.get((SPANS, 0), 0) <= 6  # the held record 6 is consumed again next start
    assert consumer.stopped and es.closed and jaeger.closed
    assert c.deliveries.in_flight == 0
