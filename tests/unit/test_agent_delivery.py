"""Delivery between sources and the sink: acks, spill, order, retries, backpressure and drops.

The sink is a scripted fake of the `Sink` protocol (tests/unit/agent_fakes.py); the real Kafka path
(outage, restart, drain) is covered in tests/e2e/test_agent_outage.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.unit.agent_fakes import FakeSink, Sent, wait_until
from tether.agent.batch import Batch
from tether.agent.config import SpoolConfig
from tether.agent.delivery import BackpressureError, Delivery
from tether.agent.metrics import AgentMetrics
from tether.agent.sinks.sink import SinkUnavailable
from tether.agent.spool import Spool
from tether.schemas.records import Signal


def _batch(n: int, size: int = 1000, signal: Signal = "logs") -> Batch:
    return Batch(signal, {n % 4: n.to_bytes(4, "big") + b"x" * size}, items=1, partitions=4)


def _delivery(tmp_path: Path, sink: FakeSink, **spool: object) -> tuple[Delivery, AgentMetrics]:
    metrics = AgentMetrics()
    options: dict[str, object] = {"spill_after_seconds": 0.05, "fsync": "never", **spool}
    return Delivery(sink, SpoolConfig(**options), tmp_path / "spool", metrics), metrics  # type: ignore[arg-type]


def _sequences(sink: FakeSink) -> list[int]:
    return [int.from_bytes(sent.value[:4], "big") for sent in sink.sent]


def _count(metrics: AgentMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"tether_agent_{name}", labels) or 0.0


async def test_acks_flow_back_and_are_counted_by_topic(tmp_path: Path) -> None:
    sink = FakeSink()
    delivery, metrics = _delivery(tmp_path, sink)
    await delivery.start()
    batches = [_batch(n) for n in range(4)] + [_batch(4, size=500, signal="spans")]
    receipts = [await delivery.submit(batch) for batch in batches]
    await asyncio.wait_for(asyncio.gather(*(r.acked for r in receipts)), 5)
    assert all(r.durable.done() and r.durable.exception() is None for r in receipts)
    assert sorted(_sequences(sink)) == [0, 1, 2, 3, 4]
    assert [s.signal for s in sink.sent].count("spans") == 1
    assert len(delivery.spool) == 0
    assert _count(metrics, "kafka_records_total", topic="fake.logs") == 4
    assert _count(metrics, "kafka_records_total", topic="fake.spans") == 1
    assert _count(metrics, "kafka_bytes_total", topic="fake.logs") == sum(b.size for b in batches[:4])
    assert _count(metrics, "kafka_bytes_total", topic="fake.spans") == 504
    assert _count(metrics, "kafka_errors_total") == 0
    await delivery.stop(1)


async def test_a_hanging_sink_spills_after_spill_after_seconds(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.hang()
    delivery, metrics = _delivery(tmp_path, sink, spill_after_seconds=0.3)
    await delivery.start()
    started = time.monotonic()
    receipt = await delivery.submit(_batch(7))
    await asyncio.sleep(0.1)
    assert not receipt.durable.done()  # neither acknowledged nor spooled yet: OTLP is not answered
    await asyncio.wait_for(receipt.durable, 5)
    assert time.monotonic() - started >= 0.3
    assert len(delivery.spool) == 1 and not receipt.acked.done()  # durable on disk, not acked
    assert _count(metrics, "kafka_errors_total") == 1
    assert _count(metrics, "spool_batches") == 1
    sink.resume()
    await asyncio.wait_for(receipt.acked, 10)
    assert len(delivery.spool) == 0 and _count(metrics, "spool_batches") == 0
    assert set(_sequences(sink)) == {7}  # the late first send may land too: a replay of the same bytes
    await delivery.stop(1)


async def test_spills_while_the_sink_is_down_and_drains_in_order(tmp_path: Path) -> None:
    sink = FakeSink()
    delivery, metrics = _delivery(tmp_path, sink)
    await delivery.start()
    sink.up = False
    receipts = [await delivery.submit(_batch(n)) for n in range(20)]
    await asyncio.wait_for(asyncio.gather(*(r.durable for r in receipts)), 5)  # on disk: durable
    assert len(delivery.spool) == 20 and not any(r.acked.done() for r in receipts)
    assert _count(metrics, "spool_batches") == 20
    sink.up = True
    await asyncio.wait_for(asyncio.gather(*(r.acked for r in receipts)), 30)
    assert _sequences(sink) == list(range(20))
    assert len(delivery.spool) == 0 and delivery.spool.bytes == 0
    await delivery.stop(1)


async def test_newer_batches_queue_behind_the_spool_until_it_drained(tmp_path: Path) -> None:
    sink = FakeSink()
    delivery, _ = _delivery(tmp_path, sink)
    await delivery.start()
    sink.up = False
    spooled = [await delivery.submit(_batch(n)) for n in range(3)]
    await asyncio.wait_for(asyncio.gather(*(r.durable for r in spooled)), 5)
    sink.up = True
    assert delivery.spooling
    later = [await delivery.submit(_batch(n)) for n in range(3, 6)]  # queued behind 0-2, on disk
    await asyncio.wait_for(asyncio.gather(*(r.acked for r in spooled + later)), 30)
    assert _sequences(sink) == list(range(6))
    await delivery.stop(1)


def _spooled_before_start(tmp_path: Path, count: int) -> None:
    spool = Spool(tmp_path / "spool", 1024**3, fsync=False)
    for n in range(count):
        spool.append(_batch(n))


async def test_a_replaced_producer_is_retried_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backoffs: list[float] = []

    def backoff(low: float, high: float) -> float:
        backoffs.append(high)
        return 60.0  # a back-off would outlast the test

    monkeypatch.setattr(random, "uniform", backoff)
    _spooled_before_start(tmp_path, 2)
    sink = FakeSink()
    sink.resets = 3
    delivery, _ = _delivery(tmp_path, sink)
    await delivery.start()
    await wait_until(lambda: len(sink.sent) == 2)
    assert backoffs == [] and sink.attempts == 5
    assert _sequences(sink) == [0, 1]
    await delivery.stop(1)


async def test_an_unavailable_sink_is_retried_after_a_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backoffs: list[float] = []

    def backoff(low: float, high: float) -> float:
        backoffs.append(high)
        return 0.01

    monkeypatch.setattr(random, "uniform", backoff)
    _spooled_before_start(tmp_path, 1)
    sink = FakeSink()
    sink.up = False
    delivery, _ = _delivery(tmp_path, sink)
    with caplog.at_level(logging.WARNING, logger="tether.agent.delivery"):
        await delivery.start()
        await wait_until(lambda: len(backoffs) >= 3)
        sink.up = True
        await wait_until(lambda: len(sink.sent) == 1)
    assert backoffs[:3] == [0.5, 1.0, 2.0]  # exponential, from 0.25 s
    waits = [r for r in caplog.records if r.getMessage() == "Kafka unavailable; spool waits"]
    # the sink's message (a refusal names the setting to fix there) and the broker's own error
    assert waits and waits[0].__dict__["error"] == "broker down (ConnectionRefusedError('broker down'))"
    await delivery.stop(1)


async def test_full_spool_blocks_and_tells_impatient_callers_to_retry(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.up = False
    delivery, _ = _delivery(tmp_path, sink, max_bytes=1024 * 1024)
    await delivery.start()
    receipts = [await delivery.submit(_batch(n, size=200_000)) for n in range(5)]  # ~1 MB spooled
    await asyncio.gather(*(r.durable for r in receipts))
    assert delivery.ready()
    with pytest.raises(BackpressureError):
        await delivery.submit(_batch(99, size=200_000), accept_timeout=0.2)
    waiting = asyncio.ensure_future(delivery.submit(_batch(100, size=200_000)))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # backpressure: the caller waits, nothing is dropped
    assert not delivery.ready()  # and /readyz says so
    sink.up = True
    receipt = await asyncio.wait_for(waiting, 30)
    await asyncio.wait_for(receipt.acked, 30)
    assert sorted(_sequences(sink)) == [0, 1, 2, 3, 4, 100]
    await delivery.stop(1)


async def test_drop_oldest_makes_room_and_counts_what_it_dropped(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.up = False
    delivery, metrics = _delivery(tmp_path, sink, max_bytes=1024 * 1024, when_full="drop_oldest")
    await delivery.start()
    receipts = [await delivery.submit(_batch(n, size=300_000)) for n in range(6)]
    await asyncio.gather(*(r.durable for r in receipts[-1:]))
    dropped = [r for r in receipts if r.acked.done() and r.acked.exception() is not None]
    assert len(dropped) == 3  # 6 x 300 kB into 1 MiB: the three oldest made room
    assert all(isinstance(r.acked.exception(), BackpressureError) for r in dropped)
    assert _count(metrics, "dropped_total", reason="spool_full_logs") == 3
    assert delivery.ready()  # dropping never blocks
    sink.up = True
    await asyncio.wait_for(asyncio.gather(*(r.acked for r in receipts[3:])), 30)
    assert _sequences(sink) == [3, 4, 5]
    await delivery.stop(1)


class _PartlyWritingSink(FakeSink):
    """The first send hands partition 0's record to the broker, then fails for the rest."""

    async def send(self, signal: Signal, records: Mapping[int, bytes]) -> None:
        if not self.attempts:
            self.attempts += 1
            first = min(records)
            self.sent.append(Sent(signal, first, records[first]))
            raise SinkUnavailable("broker went away mid-send")
        await super().send(signal, records)


async def test_a_send_that_failed_after_part_of_its_records_went_is_sent_again_whole(
    tmp_path: Path,
) -> None:
    sink = _PartlyWritingSink()
    delivery, _ = _delivery(tmp_path, sink)
    await delivery.start()
    batch = Batch("logs", {p: bytes([p]) * 100 for p in range(4)}, items=4, partitions=4)
    receipt = await delivery.submit(batch)
    await asyncio.wait_for(receipt.acked, 10)
    assert {s.partition for s in sink.sent} == {0, 1, 2, 3}  # partition 0 twice: a replay, same bytes
    assert len(sink.sent) == 5 and len(delivery.spool) == 0
    await delivery.stop(1)


class _BuggySink(FakeSink):
    """Raises what no sink may raise (a bug), once."""

    async def send(self, signal: Signal, records: Mapping[int, bytes]) -> None:
        if not self.attempts:
            self.attempts += 1
            raise RuntimeError("a bug in the sink")
        await super().send(signal, records)


async def test_a_drainer_stopped_by_a_bug_says_so_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not silently: the spool, and every batch queued behind it, would wait for a restart."""
    _spooled_before_start(tmp_path, 1)
    delivery, _ = _delivery(tmp_path, _BuggySink())
    with caplog.at_level(logging.ERROR, logger="tether.agent.delivery"):
        await delivery.start()
        await wait_until(lambda: any(r.levelno == logging.CRITICAL for r in caplog.records))
    (record,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "spool drainer stopped" in record.getMessage()
    assert record.exc_info is not None and "a bug in the sink" in str(record.exc_info[1])
    with pytest.raises(RuntimeError):
        await delivery.stop(1)


class _RecordingSink(FakeSink):
    """Remembers which batch each send was for when it began (its first 4 bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[int] = []

    async def send(self, signal: Signal, records: Mapping[int, bytes]) -> None:
        self.started.extend(int.from_bytes(value[:4], "big") for value in records.values())
        await super().send(signal, records)


async def test_drop_oldest_of_the_batch_being_drained_forgets_only_that_batch(tmp_path: Path) -> None:
    """The drainer sends the spool's head outside the lock; a full spool may drop that very head
    meanwhile. Once the send returns, the drainer must forget the batch it sent, not whichever
    is the head by then: that is a batch never sent, which would vanish uncounted."""
    sink = _RecordingSink()
    sink.up = False
    delivery, metrics = _delivery(tmp_path, sink, max_bytes=1024 * 1024, when_full="drop_oldest")
    await delivery.start()
    receipts = [await delivery.submit(_batch(n, size=400_000)) for n in range(2)]  # 0.8 MB spooled
    await asyncio.wait_for(asyncio.gather(*(r.durable for r in receipts)), 5)
    sink.hang()  # Kafka is back, but slow: the drainer's send of batch 0 is in flight
    sink.up = True
    delivery.kick()
    await wait_until(lambda: sink.started[-1:] == [0] and sink.attempts >= 3)
    receipts.append(await delivery.submit(_batch(2, size=400_000)))  # no room: drops batch 0
    assert _count(metrics, "dropped_total", reason="spool_full_logs") == 1
    sink.resume()
    await wait_until(lambda: 2 in _sequences(sink))  # sent after whatever stood before it
    assert 1 in _sequences(sink), "batch 1 was forgotten unsent"
    await asyncio.wait_for(asyncio.gather(receipts[1].acked, receipts[2].acked), 5)
    assert len(delivery.spool) == 0 and delivery.spool.bytes == 0
    await delivery.stop(1)


async def test_wait_for_room_holds_a_source_back_instead_of_spilling(tmp_path: Path) -> None:
    sink = FakeSink()
    delivery, _ = _delivery(tmp_path, sink, max_in_flight_bytes=1024 * 1024)
    await delivery.start()
    receipts = [await delivery.submit(_batch(n, size=300_000), wait_for_room=True) for n in range(10)]
    await asyncio.wait_for(asyncio.gather(*(r.acked for r in receipts)), 30)
    assert len(delivery.spool) == 0  # the sink was only slower than the reader, never down
    assert sorted(_sequences(sink)) == list(range(10))
    await delivery.stop(1)


async def test_durable_within_is_the_spill_delay(tmp_path: Path) -> None:
    delivery, _ = _delivery(tmp_path, FakeSink(), spill_after_seconds=1.5)
    assert delivery.durable_within_seconds == 1.5


def test_delivery_and_the_sources_reach_kafka_only_through_the_sink() -> None:
    """Nothing on the way to the sink imports the Kafka client: the Sink protocol is the seam."""
    check = (
        "import sys, tether.agent.delivery, tether.agent.sources.file, tether.agent.sources.otlp_grpc, "
        "tether.agent.sources.otlp_http; assert 'aiokafka' not in sys.modules, 'aiokafka imported'"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", check], check=True, env=environment, timeout=60)
