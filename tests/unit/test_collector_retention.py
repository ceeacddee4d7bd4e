"""Retention: which daily indices a pass deletes, when, how often, and alongside other collectors."""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import logging

import orjson
import pytest

from tests.unit.collector_fakes import FakeConsumer, FakeElasticsearch, config
from tether.collector.config import CollectorConfig
from tether.collector.metrics import CollectorMetrics
from tether.collector.retention import Retention, RetentionDaysConfig, expired
from tether.collector.service import Collector
from tether.config import ConfigError, parse_config

NS_PER_DAY = 86_400 * 10**9


def midnight_ns(year: int, month: int, day: int) -> int:
    return int(datetime.datetime(year, month, day, tzinfo=datetime.UTC).timestamp()) * 10**9


NOW = midnight_ns(2026, 12, 5) + 3 * 3600 * 10**9  # 03:00 UTC


class FakeIndexAdmin:
    """A node's index names; deleting a missing one answers False, like the 404 of a lost race."""

    def __init__(self, names: set[str]) -> None:
        self.names = set(names)
        self.deletes: list[str] = []
        self.fail_listing: set[str] = set()  # patterns whose listing raises
        self.fail_deleting: set[str] = set()
        self.hang = False
        self.listed = asyncio.Event()

    async def indices(self, pattern: str) -> list[str]:
        self.listed.set()
        if pattern in self.fail_listing:
            raise ConnectionError("Elasticsearch unreachable")
        await asyncio.sleep(0)  # let a concurrent pass interleave
        return sorted(name for name in self.names if fnmatch.fnmatchcase(name, pattern))

    async def delete(self, index: str) -> bool:
        self.deletes.append(index)
        if index in self.fail_deleting:
            raise ConnectionError("Elasticsearch unreachable")
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        if index not in self.names:
            return False
        self.names.remove(index)
        return True


def retention(
    admin: FakeIndexAdmin, days: dict[str, int], metrics: CollectorMetrics | None = None
) -> Retention:
    return Retention(days, admin, metrics or CollectorMetrics(), clock=lambda: NOW)


def deleted_count(metrics: CollectorMetrics, alias: str) -> float:
    return (
        metrics.registry.get_sample_value(
            "tether_collector_retention_deleted_indices_total", {"alias": alias}
        )
        or 0
    )


def test_an_index_goes_once_its_newest_possible_document_is_older_than_the_retention() -> None:
    day = "tether-logs-2026.11.28"  # holds documents up to 2026-11-29 00:00
    deadline = midnight_ns(2026, 11, 29) + 7 * NS_PER_DAY
    assert expired("tether-logs", 7, [day], deadline - 1) == []
    assert expired("tether-logs", 7, [day], deadline) == [day]
    assert expired("tether-logs", 1, ["tether-logs-2026.12.04", "tether-logs-2026.12.03"], NOW) == [
        "tether-logs-2026.12.03"
    ]


async def test_only_exact_daily_indices_of_configured_aliases_older_than_their_days_are_deleted() -> None:
    old = {"tether-logs-2026.11.01", "tether-logs-2025.01.31", "tether-deadletter-2026.10.01"}
    kept = {
        "tether-logs-2026.11.28",  # within 7 days
        "tether-deadletter-2026.11.01",  # within 60 days
        "tether-spans-2020.01.01",  # spans have no retention
        "tether-traces-2020.01.01",
        "tether-logs-2020.01.01-restored",
        "tether-logs-2020.1.1",
        "tether-logs-2020.02.30",
        "tether-logs-extra-2020.01.01",
        "tether-logsx-2020.01.01",
        "tether-logs-20200101",
        "my-tether-logs-2020.01.01",
    }
    admin = FakeIndexAdmin(old | kept)
    metrics = CollectorMetrics()
    deleted = await retention(admin, {"tether-logs": 7, "tether-deadletter": 60}, metrics).run_once()
    assert set(deleted) == old
    assert admin.names == kept
    assert deleted_count(metrics, "tether-logs") == 2 and deleted_count(metrics, "tether-deadletter") == 1


async def test_collectors_racing_delete_each_index_once_and_count_it_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = {f"tether-logs-2026.10.{day:02d}" for day in range(1, 21)}
    admin = FakeIndexAdmin(old | {"tether-logs-2026.12.05"})
    metrics = CollectorMetrics()  # one registry for both: the sum over a fleet
    caplog.set_level(logging.INFO, logger="tether.collector.retention")
    first, second = await asyncio.gather(
        retention(admin, {"tether-logs": 30}, metrics).run_once(),
        retention(admin, {"tether-logs": 30}, metrics).run_once(),
    )
    assert sorted(first + second) == sorted(old)  # each deleted by exactly one of them
    assert len(admin.deletes) > len(old)  # they did race: some deletes found the index gone
    assert deleted_count(metrics, "tether-logs") == len(old)
    assert metrics.registry.get_sample_value("tether_collector_retention_errors_total") == 0
    lines = [r for r in caplog.records if r.getMessage() == "index deleted by retention"]
    assert sorted(r.__dict__["index"] for r in lines) == sorted(old)  # one line per deleted index
    assert {(r.__dict__["alias"], r.__dict__["retention_days"]) for r in lines} == {("tether-logs", 30)}
    assert await retention(admin, {"tether-logs": 30}, metrics).run_once() == []  # nothing left to do


async def test_failures_are_counted_and_the_rest_of_the_pass_goes_on() -> None:
    admin = FakeIndexAdmin({"tether-logs-2020.01.01", "tether-logs-2020.01.02", "tether-spans-2020.01.01"})
    admin.fail_listing.add("tether-traces-*")
    admin.fail_deleting.add("tether-logs-2020.01.01")
    metrics = CollectorMetrics()
    deleted = await retention(
        admin, {"tether-traces": 1, "tether-logs": 1, "tether-spans": 1}, metrics
    ).run_once()
    assert deleted == ["tether-logs-2020.01.02", "tether-spans-2020.01.01"]
    assert metrics.registry.get_sample_value("tether_collector_retention_errors_total") == 2


async def test_passes_run_at_start_then_once_per_interval_and_stop_at_once() -> None:
    admin = FakeIndexAdmin({"tether-logs-2020.01.01"})
    passes = 0

    def clock() -> int:  # read once per pass
        nonlocal passes
        passes += 1
        return NOW

    hourly = Retention({"tether-logs": 1}, admin, CollectorMetrics(), clock=clock, interval=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(hourly.run(stop))
    await asyncio.sleep(0.05)
    assert passes == 1 and admin.names == set()
    stop.set()
    await asyncio.wait_for(task, 1)  # no waiting out the hour

    frequent = Retention({"tether-logs": 1}, admin, CollectorMetrics(), clock=clock, interval=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(frequent.run(stop))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert passes > 3


async def test_the_collector_runs_retention_beside_consuming_and_stops_it_mid_delete() -> None:
    admin = FakeIndexAdmin({"tether-logs-2020.01.01"})
    admin.hang = True  # a delete that never answers must neither hold polling nor stopping
    consumer = FakeConsumer()
    c = Collector(
        config(),
        consumer,
        FakeElasticsearch(),
        None,
        CollectorMetrics(),
        retention=retention(admin, {"tether-logs": 1}),
    )
    await c.start()
    await asyncio.wait_for(admin.listed.wait(), 1)
    await asyncio.sleep(0.01)
    assert admin.deletes == ["tether-logs-2020.01.01"]
    await asyncio.wait_for(c.poll(), 1)
    await asyncio.wait_for(c.stop(), 1)
    assert consumer.stopped


def test_retention_days_are_per_alias_and_default_to_forever() -> None:
    assert RetentionDaysConfig().by_alias() == {}
    section = config().elasticsearch.retention_days
    assert section.by_alias() == {}
    parsed = parse_config(
        "kafka: {bootstrap_servers: 'k:9092'}\nelasticsearch: {retention_days: {logs: 14, deadletter: 90}}\n",
        CollectorConfig,
    )
    assert parsed.elasticsearch.retention_days.by_alias() == {"tether-logs": 14, "tether-deadletter": 90}


@pytest.mark.parametrize(
    ("retention_days", "key"),
    [
        ({"logs": 0}, "elasticsearch.retention_days.logs"),
        ({"spans": -3}, "elasticsearch.retention_days.spans"),
        ({"traces": "a week"}, "elasticsearch.retention_days.traces"),
        ({"deadletters": 30}, "elasticsearch.retention_days.deadletters"),
        (7, "elasticsearch.retention_days"),
    ],
)
def test_invalid_retention_days_name_the_key(retention_days: object, key: str) -> None:
    section = {"retention_days": retention_days}
    text = "kafka: {bootstrap_servers: 'k:9092'}\nelasticsearch: " + orjson.dumps(section).decode()
    with pytest.raises(ConfigError) as raised:
        parse_config(text, CollectorConfig)
    assert any(problem.startswith(f"{key}:") for problem in raised.value.problems), raised.value.problems


async def test_a_pass_that_fails_unexpectedly_is_counted_and_the_next_one_runs() -> None:
    admin = FakeIndexAdmin({"tether-logs-2020.01.01"})
    calls = 0

    def clock() -> int:  # the first pass breaks on an unexpected error
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("clock broke")
        return NOW

    metrics = CollectorMetrics()
    stop = asyncio.Event()
    task = asyncio.create_task(
        Retention({"tether-logs": 1}, admin, metrics, clock=clock, interval=0.01).run(stop)
    )
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert admin.names == set()
    assert metrics.registry.get_sample_value("tether_collector_retention_errors_total") == 1
