"""Delivery: between the sources and Kafka. Memory first, the disk spool when Kafka cannot keep up.

`submit` returns once a batch is accepted and hands back a receipt: `durable` resolves when the
batch is acknowledged by Kafka or written to the spool (OTLP answers then), `acked` when Kafka
acknowledged it (file checkpoints advance then). A batch Kafka does not
acknowledge within `spill_after_seconds`, or that finds the in-memory window full, goes to the
spool, and from then on every newer batch queues behind it, so the spool drains in order before
newer data. A full spool blocks `submit` (backpressure) or, with `when_full: drop_oldest`, drops
the oldest batches and counts their records.

Kafka is reached through the `Sink` protocol (agent/sinks/sink.py). A direct send that fails is
spooled; the spool's drainer retries a send that raised SinkReset at once, and one that raised
SinkUnavailable or timed out after a back-off (cut short by `kick`, when the sink connects).
A batch split for another partition count than the sink's live one is split again when sent
(agent/repartition.py): an agent started without Kafka could only guess the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from tether import failpoints
from tether.agent.batch import Batch
from tether.agent.config import SpoolConfig
from tether.agent.encode import UntracedSpreader
from tether.agent.metrics import AgentMetrics
from tether.agent.repartition import needs_repartition, repartition
from tether.agent.sinks.sink import Sink, SinkError, SinkReset
from tether.agent.spool import Spool

log = logging.getLogger("tether.agent.delivery")


class BackpressureError(RuntimeError):
    """The agent cannot accept more now; OTLP clients are told to retry later."""


@dataclass(slots=True)
class Receipt:
    durable: asyncio.Future[None]
    acked: asyncio.Future[None]

    @classmethod
    def new(cls) -> Receipt:
        loop = asyncio.get_running_loop()
        return cls(loop.create_future(), loop.create_future())

    def settle(self, durable_only: bool = False, error: BaseException | None = None) -> None:
        for future in (self.durable,) if durable_only else (self.durable, self.acked):
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
                    future.add_done_callback(_ignore_result)  # nobody may be waiting for it


@dataclass(slots=True)
class _InFlight:
    batch: Batch
    receipt: Receipt


class Delivery:
    def __init__(self, sink: Sink, config: SpoolConfig, directory: Path, metrics: AgentMetrics) -> None:
        self.sink = sink
        self.config = config
        self.metrics = metrics
        self.spool = Spool(directory, config.max_bytes, fsync=config.fsync == "always")
        self._in_flight_bytes = 0
        self._waiting: dict[int, Receipt] = {}  # spool sequence -> receipt of a batch accepted this run
        self._changed = asyncio.Condition()
        self._drainer: asyncio.Task[None] | None = None
        self._senders: set[asyncio.Task[None]] = set()
        self._blocked = 0  # submitters waiting for room in the full spool
        self._kicked = asyncio.Event()  # ends the drainer's back-off early (Kafka is back)
        self._spreader = UntracedSpreader()  # for untraced log records of batches split again
        self._update_gauges()

    async def start(self) -> None:
        self._drainer = asyncio.create_task(self._drain(), name="spool-drainer")
        self._drainer.add_done_callback(_drainer_ended)

    async def stop(self, grace_seconds: float) -> None:
        """Wait for in-flight sends (up to the grace period); what is spooled stays for next time."""
        if self._senders:
            await asyncio.wait(self._senders, timeout=grace_seconds)
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer

    @property
    def durable_within_seconds(self) -> float:
        """How long an accepted batch may take to become durable: acknowledged, or else spooled."""
        return self.config.spill_after_seconds

    @property
    def spooling(self) -> bool:
        return len(self.spool) > 0

    def ready(self) -> bool:
        """Accepting without blocking: nobody waits for room in a full spool (or it may drop)."""
        return self.config.when_full == "drop_oldest" or (
            self._blocked == 0 and self.spool.bytes < self.config.max_bytes
        )

    async def submit(
        self, batch: Batch, accept_timeout: float | None = None, wait_for_room: bool = False
    ) -> Receipt:
        """Accept `batch`. Waits while the spool is full (backpressure); with `accept_timeout`,
        raises BackpressureError instead of waiting longer than that.

        With `wait_for_room` (a source that can simply read later, like a file), a full memory
        window is waited out instead of spilled: the spool is then only for a failing Kafka.
        """
        receipt = Receipt.new()
        if wait_for_room and not self.spooling and not self._has_room(batch):
            async with self._changed:
                await self._changed.wait_for(lambda: self.spooling or self._has_room(batch))
        if not self.spooling and self._has_room(batch):
            self._send_direct(_InFlight(batch, receipt))
            return receipt
        await self._spool(batch, receipt, accept_timeout)
        return receipt

    def _has_room(self, batch: Batch) -> bool:
        # A batch larger than the whole window still goes, alone.
        return (
            self._in_flight_bytes == 0
            or self._in_flight_bytes + batch.size <= self.config.max_in_flight_bytes
        )

    def _send_direct(self, item: _InFlight) -> None:
        self._in_flight_bytes += item.batch.size
        self.metrics.queue_depth.inc()
        task = asyncio.create_task(self._send_or_spill(item))
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _send_or_spill(self, item: _InFlight) -> None:
        send = asyncio.ensure_future(self._send(item.batch))
        try:
            await asyncio.wait_for(asyncio.shield(send), self.config.spill_after_seconds)
        except (TimeoutError, SinkError) as error:
            # Not acknowledged in time: keep it on disk. If the send still completes, the
            # spooled copy is a replay that the documents' deterministic ids make invisible.
            send.add_done_callback(_ignore_result)
            self.metrics.kafka_errors.inc()
            log.warning(
                "Kafka did not acknowledge in time; spooling to disk",
                extra={"error": _describe(error), "batch_bytes": item.batch.size},
            )
            await self._spool(item.batch, item.receipt, accept_timeout=None)
        else:
            item.receipt.settle()
        finally:
            self._in_flight_bytes -= item.batch.size
            self.metrics.queue_depth.dec()
            async with self._changed:
                self._changed.notify_all()

    def kick(self) -> None:
        """Retry the spool's head now instead of after the back-off: the sink just connected."""
        self._kicked.set()

    async def _send(self, batch: Batch) -> None:
        live = self.sink.partitions
        if needs_repartition(batch, live):
            # Split for a count Kafka does not have (or an unknown one): split again for the live
            # one, so that the trace's logs and spans share a partition number (agent/repartition.py).
            batch = repartition(batch, live, self._spreader.next_partition(live))
        started = time.monotonic()
        await self.sink.send(batch.signal, batch.records)
        failpoints.reach("agent.after_kafka_ack")
        self.metrics.send_latency.observe(time.monotonic() - started)
        topic = self.sink.topic(batch.signal)
        self.metrics.kafka_records.labels(topic).inc(len(batch.records))
        self.metrics.kafka_bytes.labels(topic).inc(batch.size)

    async def _spool(self, batch: Batch, receipt: Receipt, accept_timeout: float | None) -> None:
        async with self._changed:
            if not self.spool.fits(batch.size):
                if self.config.when_full == "drop_oldest":
                    self._drop_until_fits(batch.size)
                else:
                    self._blocked += 1
                    try:
                        await asyncio.wait_for(
                            self._changed.wait_for(lambda: self.spool.fits(batch.size)), accept_timeout
                        )
                    except TimeoutError:
                        raise BackpressureError("spool full: Kafka is not keeping up") from None
                    finally:
                        self._blocked -= 1
            sequence = self.spool.append(batch)
            # Per batch, so debug only: with the drainer's line, a restart's story (tests/e2e/test_faults.py).
            log.debug("batch spooled", extra={"sequence": sequence, "batch_bytes": batch.size})
            self._waiting[sequence] = receipt
            receipt.settle(durable_only=True)
            self._update_gauges()
            self._changed.notify_all()

    def _drop_until_fits(self, size: int) -> None:
        while not self.spool.fits(size):
            head = self.spool.head()
            if head is None:
                return
            sequence, dropped = head
            self.spool.remove(sequence)
            self.metrics.dropped.labels(f"spool_full_{dropped.signal}").inc(dropped.items)
            waiting = self._waiting.pop(sequence, None)
            if waiting is not None:
                waiting.settle(error=BackpressureError("dropped from the full spool"))
            log.error(
                "spool full: dropped the oldest batch",
                extra={"items": dropped.items, "signal": dropped.signal},
            )

    async def _drain(self) -> None:
        """Send spooled batches in order, each until Kafka acknowledges it, then forget it."""
        attempt = 0
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self.spooling)
                head = self.spool.head()
            if head is None:
                continue
            sequence, batch = head
            self._kicked.clear()  # a kick from now on ends the back-off after this attempt
            try:
                await asyncio.wait_for(self._send(batch), self.config.spill_after_seconds * 4)
            except (TimeoutError, SinkError) as error:
                if isinstance(error, SinkReset):
                    attempt = 0  # Kafka is back and the sink has a fresh producer: go again now
                    continue
                attempt += 1
                delay = random.uniform(0, min(10.0, 0.25 * 2 ** min(attempt, 8)))
                log.warning(
                    "Kafka unavailable; spool waits",
                    extra={
                        "error": _describe(error),
                        "retry_in_seconds": round(delay, 2),
                        "spooled_batches": len(self.spool),
                    },
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kicked.wait(), delay)
                continue
            attempt = 0
            log.debug("spooled batch sent", extra={"sequence": sequence, "batch_bytes": batch.size})
            async with self._changed:
                self.spool.remove(sequence)  # not "the head": it may have been dropped meanwhile
                waiting = self._waiting.pop(sequence, None)
                if waiting is not None:
                    waiting.settle()
                self._update_gauges()
                self._changed.notify_all()
                if not self.spooling:
                    log.info("spool drained; sending directly again")

    def _update_gauges(self) -> None:
        self.metrics.spool_bytes.set(self.spool.bytes)
        self.metrics.spool_batches.set(len(self.spool))


def _describe(error: BaseException) -> str:
    """For logs: the sink's message (it may name the setting to fix) and the broker client's own
    error when the sink wrapped one, as that says what happened."""
    if isinstance(error, SinkError) and error.__cause__ is not None:
        return f"{error} ({error.__cause__!r})"
    return repr(error)


def _drainer_ended(task: asyncio.Task[None]) -> None:
    """Say so at once if the drainer died of a bug: the task is referenced, so asyncio would only
    tell at exit, and meanwhile the spool, and every batch queued behind it, silently waits."""
    if not task.cancelled() and task.exception() is not None:
        log.critical(
            "spool drainer stopped by an unexpected error; spooled batches wait for a restart",
            exc_info=task.exception(),
        )


def _ignore_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
