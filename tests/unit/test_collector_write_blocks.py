"""Write blocks (flood-stage disk, index.blocks.write, read-only index, cluster block): documents
are held and retried, never dead-lettered; the collector is not ready and commits nothing past them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import AuthorizationException

from tests.unit.collector_fakes import LOGS, FakeConsumer, config, log_record, poll, spin
from tether.collector.config import ElasticsearchSinkConfig
from tether.collector.metrics import CollectorMetrics
from tether.collector.service import Collector
from tether.collector.sinks import elasticsearch as sink_module
from tether.collector.sinks.elasticsearch import ElasticsearchSink, IndexRequest

DAY_NS = 1_700_000_000 * 10**9
INDEX_WRITE_BLOCK = {
    "status": 403,
    "error": {
        "type": "cluster_block_exception",
        "reason": "index [tether-logs-2023.11.14] blocked by: [FORBIDDEN/8/index write (api)];",
    },
}
FLOOD_STAGE = {
    "status": 429,
    "error": {
        "type": "cluster_block_exception",
        "reason": "index [tether-logs-2023.11.14] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded "
        "flood-stage watermark, index has read-only-allow-delete block];",
    },
}
READ_ONLY = {
    "status": 403,
    "error": {
        "type": "cluster_block_exception",
        "reason": "index [tether-logs-2023.11.14] blocked by: [FORBIDDEN/5/index read-only (api)];",
    },
}


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink_module, "_backoff", lambda attempt: 0.001)


class _BlockableBulk:
    """A bulk endpoint whose every item answers `block` while it is set, and is indexed otherwise;
    `request_block` refuses whole requests instead, as a cluster-wide block does."""

    def __init__(self, block: dict[str, Any] | None = None) -> None:
        self.block = block
        self.request_block = False
        self.calls = 0
        self.indexed: list[bytes] = []

    async def __call__(self, *, operations: bytes, **_: Any) -> dict[str, Any]:
        self.calls += 1
        if self.request_block:
            meta = ApiResponseMeta(403, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "localhost", 9200))
            body = {
                "error": {
                    "type": "cluster_block_exception",
                    "reason": "blocked by: [FORBIDDEN/6/cluster read-only (api)];",
                },
                "status": 403,
            }
            raise AuthorizationException("cluster_block_exception", meta, body)
        lines = operations.splitlines()
        sources = lines[1::2]
        if self.block is not None:
            return {"errors": True, "items": [{"index": self.block} for _ in sources]}
        self.indexed += sources
        return {"errors": False, "items": [{"index": {"status": 201}} for _ in sources]}


def _sink(bulk: _BlockableBulk) -> tuple[ElasticsearchSink, CollectorMetrics]:
    metrics = CollectorMetrics()
    sink = ElasticsearchSink(ElasticsearchSinkConfig(), metrics)
    sink.client.bulk = bulk  # type: ignore[method-assign,assignment]
    return sink, metrics


def _sample(metrics: CollectorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def _until(condition: Any, turns: int = 2000) -> None:
    for _ in range(turns):
        if condition():
            return
        await spin()
    raise AssertionError("condition never held")


@pytest.mark.parametrize("block", [INDEX_WRITE_BLOCK, FLOOD_STAGE, READ_ONLY], ids=["write", "flood", "ro"])
async def test_a_blocked_document_waits_for_the_block_and_is_never_rejected(block: dict[str, Any]) -> None:
    bulk = _BlockableBulk(block)
    sink, metrics = _sink(bulk)
    try:
        task = asyncio.create_task(sink.index([IndexRequest("tether-logs", "l", DAY_NS, {"m": 1})]))
        await _until(lambda: bulk.calls >= 3)
        assert not task.done()
        assert sink.write_blocked
        assert _sample(metrics, "tether_collector_write_blocked") == 1
        assert (_sample(metrics, "tether_collector_bulk_retries_total", reason="blocked") or 0) >= 2
        bulk.block = None  # the operator (or the disk) lifts it
        assert await task == []
        assert bulk.indexed == [b'{"m":1}']
        assert not sink.write_blocked
        assert _sample(metrics, "tether_collector_write_blocked") == 0
        assert _sample(metrics, "tether_collector_deadlettered_total", index="tether-logs") is None
    finally:
        await sink.close()


async def test_a_cluster_block_on_the_whole_request_is_waited_out_too() -> None:
    bulk = _BlockableBulk()
    bulk.request_block = True
    sink, metrics = _sink(bulk)
    try:
        task = asyncio.create_task(sink.index([IndexRequest("tether-logs", "l", DAY_NS, {"m": 1})]))
        await _until(lambda: bulk.calls >= 3)
        assert not task.done() and sink.write_blocked
        assert sink.healthy  # reachable: blocked is a state of its own
        bulk.request_block = False
        assert await task == []
        assert bulk.indexed == [b'{"m":1}'] and not sink.write_blocked
        assert (_sample(metrics, "tether_collector_bulk_retries_total", reason="blocked") or 0) >= 2
    finally:
        await sink.close()


async def test_two_blocked_deliveries_keep_the_state_until_both_are_through() -> None:
    bulk = _BlockableBulk(INDEX_WRITE_BLOCK)
    sink, metrics = _sink(bulk)
    try:
        first = asyncio.create_task(sink.index([IndexRequest("tether-logs", "a", DAY_NS, {})]))
        second = asyncio.create_task(sink.index([IndexRequest("tether-logs", "b", DAY_NS, {})]))
        await _until(lambda: bulk.calls >= 4)
        first.cancel()  # a delivery cancelled mid-block (shutdown) does not leave the flag set
        await asyncio.gather(first, return_exceptions=True)
        assert sink.write_blocked
        bulk.block = None
        await second
        assert not sink.write_blocked and _sample(metrics, "tether_collector_write_blocked") == 0
    finally:
        await sink.close()


async def test_the_collector_holds_commits_and_readiness_while_blocked_and_resumes() -> None:
    bulk = _BlockableBulk()
    metrics = CollectorMetrics()
    sink = ElasticsearchSink(ElasticsearchSinkConfig(), metrics)
    sink.client.bulk = bulk  # type: ignore[method-assign,assignment]
    consumer = FakeConsumer()
    c = Collector(config(), consumer, sink, None, metrics, commit_interval=0)
    c.started = True
    try:
        consumer.polls.append(poll(log_record(0), log_record(1)))
        await c.poll()
        await _until(lambda: c.deliveries.in_flight == 0)
        await c.poll()
        assert consumer.committed == {(LOGS, 0): 2} and c.ready()

        bulk.block = INDEX_WRITE_BLOCK
        consumer.polls.append(poll(log_record(2), log_record(3)))
        await c.poll()
        await _until(lambda: bulk.calls >= 4)
        await c.poll()
        assert consumer.committed == {(LOGS, 0): 2}  # not past the blocked records
        assert not c.ready()
        assert len(bulk.indexed) == 2  # nothing dead-lettered: the letter would be indexed too

        bulk.block = None
        await _until(lambda: c.deliveries.in_flight == 0)
        await c.poll()
        assert consumer.committed == {(LOGS, 0): 4} and c.ready()
        assert len(bulk.indexed) == 4
        assert all(b"deadletter" not in source for source in bulk.indexed)
    finally:
        await sink.close()
