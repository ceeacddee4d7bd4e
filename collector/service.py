"""Running a collector: one member of the consumer group over the logs and spans topics.

Records are consumed (consume.py), decoded (decode.py), held by trace (correlate.py), delivered to
Elasticsearch and Jaeger (deliver.py), and their offsets committed once every part of a record is
acknowledged (offsets.py, commit.py). A Collector is given its Kafka consumer and its sinks;
`run_collector` builds the real ones from the configuration.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiokafka import ConsumerRebalanceListener, TopicPartition

from tether import native
from tether.allocator import return_large_blocks
from tether.collector.commit import COMMIT_INTERVAL_SECONDS, Committer
from tether.collector.config import CollectorConfig
from tether.collector.consume import RecordConsumer
from tether.collector.deliver import Deliveries, DocumentSink, SpanSink
from tether.collector.gc_tuning import tune_garbage_collector
from tether.collector.kafka import GroupConsumer, KafkaConsumer, check_copartitioned
from tether.collector.metrics import CollectorMetrics
from tether.collector.retention import ElasticsearchIndexAdmin, Retention
from tether.collector.sinks.elasticsearch import ElasticsearchSink
from tether.collector.sinks.jaeger import JaegerSink
from tether.collector.until_stopped import until_stopped
from tether.logs import configure_logging
from tether.ops import OpsServer

log = logging.getLogger("tether.collector")

# How long a stop waits to deliver what it holds. A sink that keeps refusing (a TLS or credential
# problem, an outage) would otherwise hold SIGTERM forever; what is abandoned stays uncommitted,
# so the next start consumes it again.
STOP_DELIVERY_GRACE_SECONDS = 15.0


class Collector:
    def __init__(
        self,
        config: CollectorConfig,
        consumer: GroupConsumer,
        elasticsearch: DocumentSink,
        jaeger: SpanSink | None,
        metrics: CollectorMetrics,
        *,
        commit_interval: float = COMMIT_INTERVAL_SECONDS,
        retention: Retention | None = None,
    ) -> None:
        self.config = config
        self.consumer = consumer
        self.elasticsearch = elasticsearch
        self.jaeger = jaeger
        self.metrics = metrics
        self.records = RecordConsumer(config, metrics, lag=consumer.lag, spans_to_jaeger=jaeger is not None)
        self.deliveries = Deliveries(
            elasticsearch,
            jaeger,
            metrics,
            max_concurrent=config.elasticsearch.max_concurrent_bulks,
            delivered=self.records.sync_metrics,
        )
        self.committer = Committer(consumer, config.kafka, metrics, interval=commit_interval)
        self.retention = retention
        self._retention_task: asyncio.Task[None] | None = None
        self._retention_stop = asyncio.Event()
        self.started = False
        # Polls, flushes and revocations take turns: each sees the partitions whole.
        self._lock = asyncio.Lock()
        self._abandoned = False  # stop gave up delivering: nothing more is flushed or committed

    def ready(self) -> bool:
        jaeger_healthy = self.jaeger is None or self.jaeger.healthy
        elasticsearch_ready = self.elasticsearch.healthy and not self.elasticsearch.write_blocked
        kafka_accepts = self.consumer.refusal is None  # e.g. an ACL revoked while running
        return self.started and kafka_accepts and elasticsearch_ready and jaeger_healthy

    async def start(self) -> None:
        await self.elasticsearch.install_templates()
        await self.consumer.start()
        topics = [self.config.kafka.logs_topic, self.config.kafka.spans_topic]
        await check_copartitioned(self.consumer, topics)
        self.consumer.subscribe(topics, listener=_Rebalance(self))
        if self.retention is not None:  # beside consuming, never in its way
            self._retention_task = asyncio.create_task(self.retention.run(self._retention_stop))
        self.started = True

    async def stop(self) -> None:
        await self._stop_retention()
        async with self._lock:
            try:
                await asyncio.wait_for(self._settle_and_flush(), STOP_DELIVERY_GRACE_SECONDS)
            except TimeoutError:
                self._abandoned = True  # the revocation in consumer.stop() must not wait again
                await self.deliveries.abandon()
                log.warning(
                    "stopping without delivering what is held: it stays uncommitted for the next start",
                    extra={"grace_seconds": STOP_DELIVERY_GRACE_SECONDS},
                )
        await self.consumer.stop()
        await self.elasticsearch.close()
        if self.jaeger is not None:
            await self.jaeger.close()

    async def _settle_and_flush(self) -> None:
        await self.deliveries.settle()
        await self._flush(list(self.records.partitions))

    async def _stop_retention(self) -> None:
        """Stop the retention task; a deletion cut short is redone by the next pass (idempotent)."""
        task, self._retention_task = self._retention_task, None
        if task is None:
            return
        self._retention_stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()

    async def poll(self) -> None:
        """Consume one poll's records, and commit if the last commit is old enough."""
        batch = await self.consumer.getmany(timeout_ms=200)
        async with self._lock:
            await self.records.consume(batch, self.deliveries.start)
            self._align()
            if self.committer.due(asyncio.get_running_loop().time()):
                await self.committer.commit(self.records.trackers(list(self.records.partitions)))

    def _align(self) -> None:
        """Pause each topic-partition read ahead of its partner in event time, resume the others."""
        held, paused = self.records.held_back(), self.consumer.paused()
        if held - paused:
            self.consumer.pause(*(held - paused))
        if paused - held:
            self.consumer.resume(*(paused - held))
        self.metrics.paused_partitions.set(len(held))

    async def _flush(self, partitions: list[int]) -> None:
        """Index what the partitions can emit, let go of traces still in their window (the next
        reader replays them whole), and commit what is done."""
        await self.deliveries.deliver(self.records.let_go(partitions))
        await self.committer.commit(self.records.trackers(partitions))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        partitions = sorted({tp.partition for tp in revoked} & set(self.records.partitions))
        async with self._lock:
            try:
                if not self._abandoned:
                    await self.deliveries.settle()
                    await self._flush(partitions)
            finally:  # even when the commit is refused: a reassigned partition starts afresh
                for partition in partitions:
                    self.records.drop(partition)
        log.info("partitions revoked", extra={"partitions": partitions})


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.collector.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(
            "partitions assigned",
            extra={"partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)},
        )


def build_collector(config: CollectorConfig) -> Collector:
    """A Collector with the real Kafka consumer, Elasticsearch and Jaeger clients of `config`."""
    metrics = CollectorMetrics()
    elasticsearch = ElasticsearchSink(config.elasticsearch, metrics)
    retention_days = config.elasticsearch.retention_days.by_alias()
    return Collector(
        config,
        KafkaConsumer(config.kafka),
        elasticsearch,
        JaegerSink(config.jaeger, metrics) if config.jaeger.enabled else None,
        metrics,
        retention=(
            Retention(retention_days, ElasticsearchIndexAdmin(elasticsearch.client), metrics)
            if retention_days
            else None
        ),
    )


async def run_collector(config: CollectorConfig, stop: asyncio.Event | None = None) -> None:
    configure_logging(config.log_level)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    tune_garbage_collector()
    return_large_blocks()
    collector = build_collector(config)
    native.announce(native.collector_paths(), collector.metrics.native_path, log)
    ops = OpsServer(config.ops.endpoint, collector.metrics.registry, ready=collector.ready)
    await ops.start()
    try:
        if not await until_stopped(collector.start(), stop):  # stopped while still connecting
            return
        log.info("collector started", extra={"group_id": config.kafka.group_id})
        await collector.run(stop)
    finally:
        await collector.stop()
        await ops.stop()
        log.info("collector stopped", extra=collector.records.stats.summary())
