"""The collector and an Elasticsearch it does not own alone: write blocks and retention, on the
real node that other test sessions share. Nothing here touches a cluster-wide setting or an index
another test could be writing: each test works on daily indices of days long past that only it
creates (the collector's timestamp window is opened wide enough to index such days)."""

from __future__ import annotations

import asyncio
import datetime
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from elasticsearch import AsyncElasticsearch

from tests.e2e.collector_harness import (
    CollectorProcess,
    Producer,
    create_topics,
    new_topics,
    search,
    wait_for_count,
)
from tether.collector.config import ElasticsearchSinkConfig
from tether.collector.metrics import CollectorMetrics
from tether.collector.sinks.elasticsearch import ElasticsearchSink
from tether.schemas.indices import DEADLETTER_ALIAS, LOGS_ALIAS, SPANS_ALIAS, TRACES_ALIAS
from tether.stack import Stack

pytestmark = pytest.mark.stack

UNTRACED_PARTITION = 0  # where the harness's Producer puts lines without a trace


def _add_config(collector: CollectorProcess, yaml: str) -> None:
    collector.config.write_text(collector.config.read_text() + yaml)


async def _until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"never: {what}")


async def _committed_and_end(stack: Stack, group: str, topic: str, partition: int) -> tuple[int | None, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka.bootstrap, group_id=group)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return await consumer.committed(tp), (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


# index.blocks.read_only_allow_delete is the block the flood-stage disk watermark sets (429); set
# by hand on one index it is the same block without filling the shared node's disk.
@pytest.mark.parametrize(
    "block", ["index.blocks.write", "index.blocks.read_only", "index.blocks.read_only_allow_delete"]
)
async def test_a_write_block_on_the_daily_index_holds_everything_until_it_is_lifted(
    stack: Stack, tmp_path: Path, block: str
) -> None:
    logs_topic, spans_topic, run = new_topics("wblock")
    await create_topics(stack, logs_topic, spans_topic)
    # A day of its own (1990-2009), so the block stops no other test's documents.
    day = datetime.date(1990, 1, 1) + datetime.timedelta(days=random.randrange(7300))
    index = f"{LOGS_ALIAS}-{day:%Y.%m.%d}"
    es = AsyncElasticsearch(stack.elasticsearch.url)
    assert not await es.indices.exists(index=index), f"{index} exists: another run is using it"
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=1)
    _add_config(collector, "timestamps: {max_age_days: 20000}\n")

    def line(k: int) -> bytes:
        stamp = f"{day.isoformat()}T12:00:{k // 1000:02d}.{k % 1000:03d}Z"
        return orjson.dumps({"@timestamp": stamp, "level": "info", "message": f"{run} line {k}"})

    query = {"match_phrase": {"message": run}}
    try:
        collector.start()
        collector.wait_assigned()
        async with Producer(stack, logs_topic, spans_topic) as producer:
            for k in range(20):
                await producer.lines([line(k)])
            await wait_for_count(stack, index, query, 20, within=60)
            assert collector.get("/readyz")[0] == 200

            await es.indices.put_settings(index=index, settings={block: True})
            _, first_blocked = await _committed_and_end(stack, run, logs_topic, UNTRACED_PARTITION)
            for k in range(20, 40):  # one record each
                await producer.lines([line(k)])

        async def blocked() -> bool:
            return collector.metrics().get("tether_collector_write_blocked") == 1

        await _until(blocked, 60, "tether_collector_write_blocked == 1")
        await asyncio.sleep(3)  # several commit intervals and retries while blocked
        metrics = collector.metrics()
        assert collector.get("/readyz")[0] == 503
        assert metrics['tether_collector_bulk_retries_total{reason="blocked"}'] > 0
        assert metrics.get('tether_collector_deadlettered_total{index="tether-logs"}', 0) == 0
        committed, end = await _committed_and_end(stack, run, logs_topic, UNTRACED_PARTITION)
        assert (committed, end) == (first_blocked, first_blocked + 20)  # nothing blocked is committed
        letters = await search(stack, DEADLETTER_ALIAS, {"term": {"deadletter.index": index}})
        assert letters == []
        assert len(await search(stack, index, query)) == 20

        await es.indices.put_settings(index=index, settings={block: None})  # lifted
        await wait_for_count(stack, index, query, 40, within=60)
        await asyncio.sleep(3)  # anything duplicated would show up by now

        async def caught_up() -> bool:
            return (await _committed_and_end(stack, run, logs_topic, UNTRACED_PARTITION))[0] == end

        await _until(caught_up, 30, "offsets committed up to the end")
        hits = await search(stack, index, query)
        assert sorted(Counter(hit["_source"]["message"] for hit in hits).values()) == [1] * 40
        assert collector.get("/readyz")[0] == 200
        assert collector.metrics()["tether_collector_write_blocked"] == 0
        assert await search(stack, DEADLETTER_ALIAS, {"term": {"deadletter.index": index}}) == []
        assert collector.stop() == 0, collector.tail()
    finally:
        if collector.process is not None and collector.process.poll() is None:
            collector.stop()
        if await es.indices.exists(index=index):
            await es.indices.put_settings(index=index, settings={block: None})
            await es.indices.delete(index=index)
        await es.close()


# Back-dated indices: days before 1973 are ours (no test writes such days; the collector's default
# timestamp window keeps documents within 30 days). Each alias gets one old index that retention
# must delete, and a newer one and a look-alike name it must keep.
RETENTION_CUTOFF = datetime.date(1973, 1, 1)


async def test_retention_deletes_back_dated_daily_indices_and_only_those(
    stack: Stack, tmp_path: Path
) -> None:
    logs_topic, spans_topic, run = new_topics("retain")
    await create_topics(stack, logs_topic, spans_topic)
    aliases = {
        "logs": LOGS_ALIAS,
        "spans": SPANS_ALIAS,
        "traces": TRACES_ALIAS,
        "deadletter": DEADLETTER_ALIAS,
    }
    rng = random.Random()
    old = {
        f"{alias}-{datetime.date(1971, 1, 1) + datetime.timedelta(days=rng.randrange(700)):%Y.%m.%d}"
        for alias in aliases.values()
    }
    kept = {
        f"{alias}-1974.{rng.randrange(1, 13):02d}.{rng.randrange(1, 29):02d}" for alias in aliases.values()
    }
    kept |= {f"{LOGS_ALIAS}-1971.01.01-{run}", f"{DEADLETTER_ALIAS}-{run}-1971.01.01"}
    es = AsyncElasticsearch(stack.elasticsearch.url)
    # On the shared node no index of our aliases may be that old except ours: we are about to
    # delete every one there is.
    pattern = ",".join(f"{alias}-19*" for alias in aliases.values())
    before = {entry["name"] for entry in (await es.indices.resolve_index(name=pattern))["indices"]}
    assert not before, f"indices this test would delete exist already: {sorted(before)}"
    # Index of day D is kept while D + 1 + days > today: this many days deletes every day before 1973.
    days = (datetime.datetime.now(datetime.UTC).date() - RETENTION_CUTOFF).days
    first = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, name="first")
    second = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, name="second")
    watched = f"{pattern},{DEADLETTER_ALIAS}-{run}-*"

    async def present() -> set[str]:
        resolved = await es.indices.resolve_index(name=watched, expand_wildcards="all")
        return {entry["name"] for entry in resolved["indices"]}

    try:
        for name in old | kept:
            await es.indices.create(index=name, settings={"number_of_replicas": 0})
        for collector in (first, second):  # both run it at once: each index is deleted, once
            collector.config.write_text(
                collector.config.read_text().replace(
                    "replicas: 0}",
                    "replicas: 0, retention_days: {" + ", ".join(f"{key}: {days}" for key in aliases) + "}}",
                )
            )
            collector.start()

        async def gone() -> bool:
            return not (await present()) & old

        await _until(gone, 60, f"{sorted(old)} deleted")
        first.wait_assigned()
        second.wait_assigned()
        await asyncio.sleep(2)  # the slower collector's pass is done too
        assert await present() == kept

        logged: list[str] = []
        deleted_total = 0.0
        for collector in (first, second):
            for raw in collector.output.read_bytes().splitlines():
                if raw.startswith(b"{") and b"index deleted by retention" in raw:
                    entry = orjson.loads(raw)
                    assert entry["retention_days"] == days
                    logged.append(entry["index"])
            metrics = collector.metrics()
            assert metrics.get("tether_collector_retention_errors_total") == 0, collector.tail()
            deleted_total += sum(
                v
                for k, v in metrics.items()
                if k.startswith("tether_collector_retention_deleted_indices_total")
            )
        assert sorted(logged) == sorted(old)  # one line per deleted index, whichever collector won
        assert deleted_total == len(old)
        assert first.stop() == 0 and second.stop() == 0
    finally:
        for collector in (first, second):
            if collector.process is not None and collector.process.poll() is None:
                collector.stop()
        for name in old | kept:
            await es.indices.delete(index=name, ignore_unavailable=True)
        await es.close()


async def test_template_fields_new_in_an_upgrade_reach_existing_daily_indices(stack: Stack) -> None:
    """A daily index made by an older template lacks a newer field: installing the templates at
    start adds it, so it is searchable in that index at once, not from the next day on."""
    es = AsyncElasticsearch(stack.elasticsearch.url)
    index = f"{LOGS_ALIAS}-1969.{random.randrange(1, 13):02d}.{random.randrange(1, 29):02d}"
    old_template = f"tether-test-older-{index}"
    try:
        await es.indices.delete(index=index, ignore_unavailable=True)
        # as an older collector's template made it (only the highest-priority template applies):
        # no tether.inference
        await es.indices.put_index_template(
            name=old_template,
            index_patterns=[index],
            priority=1000,
            template={"mappings": {"dynamic": False, "properties": {"message": {"type": "text"}}}},
        )
        await es.indices.create(index=index)
        await es.indices.delete_index_template(name=old_template)
        await es.index(
            index=index, id="old", document={"message": "m", "tether": {"inference": "root"}}, refresh=True
        )
        found = await es.count(index=index, query={"term": {"tether.inference": "root"}})
        assert found["count"] == 0  # stored, but not mapped: not searchable

        sink = ElasticsearchSink(
            ElasticsearchSinkConfig(url=stack.elasticsearch.url, replicas=0), CollectorMetrics()
        )
        try:
            await sink.install_templates()
        finally:
            await sink.close()
        mapping = await es.indices.get_mapping(index=index)
        tether_fields = mapping[index]["mappings"]["properties"]["tether"]["properties"]
        assert tether_fields["inference"] == {"type": "keyword"}
        # documents written from now on are searchable by it (those before stay as they were)
        await es.index(
            index=index, id="new", document={"message": "m", "tether": {"inference": "root"}}, refresh=True
        )
        found = await es.search(index=index, query={"term": {"tether.inference": "root"}})
        assert [hit["_id"] for hit in found["hits"]["hits"]] == ["new"]
    finally:
        await es.indices.delete(index=index, ignore_unavailable=True)
        await es.options(ignore_status=404).indices.delete_index_template(name=old_template)
        await es.close()
