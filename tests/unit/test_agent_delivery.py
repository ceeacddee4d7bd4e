"""Delivery between sources and Kafka: spill, order, backpressure and drops, with a scripted Kafka.

The Kafka sink is replaced by a stand-in whose acknowledgements the test controls; the real
Kafka path (outage, restart, drain) is covered in tests/e2e/test_agent_outage.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from tether.agent.batch import Batch
from tether.agent.config import KafkaSinkConfig, SpoolConfig
from tether.agent.delivery import BackpressureError, Delivery
from tether.agent.metrics import AgentMetrics


class ScriptedKafka:
    """Acknowledges while `up`; otherwise fails each send after a short wait, like a dead broker."""

    def __init__(self) -> None:
        self.config = KafkaSinkConfig(bootstrap_servers="unused:9092")
        self.up = True
        self.delivered: list[bytes] = []

    async def send_logs(self, records: Mapping[int, bytes]) -> None:
        await self._send(records)

    async def send_spans(self, records: Mapping[int, bytes]) -> None:
        await self._send(records)

    async def _send(self, records: Mapping[int, bytes]) -> None:
        await asyncio.sleep(0.01)
        if not self.up:
            raise KafkaConnectionError("broker down")
        self.delivered.extend(records.values())


def _batch(n: int, size: int = 1000) -> Batch:
    return Batch("logs", {n % 8: n.to_bytes(4, "big") + b"x" * size}, items=1)


def _delivery(tmp_path: Path, kafka: ScriptedKafka, **spool: object) -> tuple[Delivery, AgentMetrics]:
    metrics = AgentMetrics()
    config = SpoolConfig(spill_after_seconds=0.05, fsync="never", **spool)  # type: ignore[arg-type]
    return Delivery(kafka, config, tmp_path / "spool", metrics), metrics  # type: ignore[arg-type]


def _sequence(value: bytes) -> int:
    return int.from_bytes(value[:4], "big")


async def test_spills_while_kafka_is_down_and_drains_in_order(tmp_path: Path) -> None:
    kafka = ScriptedKafka()
    delivery, metrics = _delivery(tmp_path, kafka)
    await delivery.start()
    kafka.up = False
    receipts = [await delivery.submit(_batch(n)) for n in range(20)]
    await asyncio.wait_for(asyncio.gather(*(r.durable for r in receipts)), 5)  # on disk: durable
    assert len(delivery.spool) == 20 and not any(r.acked.done() for r in receipts)
    assert metrics.spool_batches._value.get() == 20
    kafka.up = True
    await asyncio.wait_for(asyncio.gather(*(r.acked for r in receipts)), 30)
    assert [_sequence(v) for v in kafka.delivered] == list(range(20))
    assert len(delivery.spool) == 0 and delivery.spool.bytes == 0
    await delivery.stop(1)


async def test_full_spool_blocks_and_tells_impatient_callers_to_retry(tmp_path: Path) -> None:
    kafka = ScriptedKafka()
    kafka.up = False
    delivery, _ = _delivery(tmp_path, kafka, max_bytes=1024 * 1024)
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
    kafka.up = True
    receipt = await asyncio.wait_for(waiting, 30)
    await asyncio.wait_for(receipt.acked, 30)
    assert sorted(_sequence(v) for v in kafka.delivered) == [0, 1, 2, 3, 4, 100]
    await delivery.stop(1)


async def test_drop_oldest_makes_room_and_counts_what_it_dropped(tmp_path: Path) -> None:
    kafka = ScriptedKafka()
    kafka.up = False
    delivery, metrics = _delivery(tmp_path, kafka, max_bytes=1024 * 1024, when_full="drop_oldest")
    await delivery.start()
    receipts = [await delivery.submit(_batch(n, size=300_000)) for n in range(6)]
    await asyncio.gather(*(r.durable for r in receipts[-1:]))
    dropped = [r for r in receipts if r.acked.done() and r.acked.exception() is not None]
    assert len(dropped) == 3  # 6 x 300 kB into 1 MiB: the three oldest made room
    assert metrics.dropped.labels("spool_full_logs")._value.get() == 3
    kafka.up = True
    await asyncio.wait_for(asyncio.gather(*(r.acked for r in receipts[3:])), 30)
    assert [_sequence(v) for v in kafka.delivered] == [3, 4, 5]
    await delivery.stop(1)


async def test_wait_for_room_holds_a_source_back_instead_of_spilling(tmp_path: Path) -> None:
    kafka = ScriptedKafka()
    delivery, _ = _delivery(tmp_path, kafka, max_in_flight_bytes=1024 * 1024)
    await delivery.start()
    receipts = [await delivery.submit(_batch(n, size=300_000), wait_for_room=True) for n in range(10)]
    await asyncio.wait_for(asyncio.gather(*(r.acked for r in receipts)), 30)
    assert len(delivery.spool) == 0  # Kafka was only slower than the reader, never down
    assert sorted(_sequence(v) for v in kafka.delivered) == list(range(10))
    await delivery.stop(1)
