"""Running the agent: sources -> delivery (memory, disk spool) -> Kafka, plus the ops endpoint.

Kafka need not be reachable at start: the receivers and the file source start at once and what
they accept is spooled while agent/kafka_connector.py keeps trying (/readyz says not ready). Until
Kafka's partition count is known they split with the one remembered in data_dir, or 1; delivery
splits again what was split for another count (agent/repartition.py).

SIGTERM/SIGINT: stop accepting (receivers first), let in-flight batches finish within the grace
period, checkpoint what Kafka acknowledged, exit. What is spooled stays for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from tether import native
from tether.agent.checkpoint import Checkpoints
from tether.agent.config import AgentConfig
from tether.agent.delivery import Delivery
from tether.agent.kafka_connector import KafkaConnector
from tether.agent.metrics import AgentMetrics
from tether.agent.partition_memory import PartitionMemory
from tether.agent.sinks.kafka import KafkaSink
from tether.agent.sources.file import FileSource
from tether.agent.sources.otlp import OtlpIngest
from tether.agent.sources.otlp_grpc import start_grpc_receiver
from tether.agent.sources.otlp_http import start_http_receiver
from tether.allocator import keep_freed_memory
from tether.logs import configure_logging
from tether.ops import OpsServer

log = logging.getLogger("tether.agent")


async def run_agent(config: AgentConfig, stop: asyncio.Event | None = None) -> None:
    configure_logging(config.log_level)
    keep_freed_memory()
    stop = stop or _stop_on_signals()
    metrics = AgentMetrics()
    native.announce(native.agent_paths(), metrics.native_path, log)
    sink = KafkaSink(config.kafka)
    memory = PartitionMemory(config.data_dir, config.kafka.logs_topic, config.kafka.spans_topic)
    # Until Kafka answers: the count it had last time (most likely still right), else 1, i.e.
    # one unsplit record per batch; delivery splits again whatever does not match Kafka's.
    partitions = memory.recall() or 1
    delivery = Delivery(sink, config.spool, config.spool_directory, metrics)
    ingest: OtlpIngest | None = None
    source: FileSource | None = None

    def use_live_partitions(live: int) -> None:
        metrics.kafka_connected.set(1)
        if ingest is not None:
            ingest.partitions = live
        if source is not None:
            source.use_partitions(live)
        delivery.kick()

    connector = KafkaConnector(sink, config.kafka.bootstrap_servers, memory, use_live_partitions)
    ops = OpsServer(
        config.ops.endpoint,
        metrics.registry,
        ready=lambda: connector.connected and sink.refusal is None and delivery.ready(),
        not_ready_reason=lambda: (
            connector.not_ready_reason()
            or (None if sink.refusal is None else f"Kafka refused the sends: {sink.refusal}")
            or (None if delivery.ready() else "spool full: Kafka is not keeping up")
        ),
    )
    await ops.start()
    await delivery.start()
    connect_task = asyncio.create_task(connector.run(stop), name="kafka-connector")
    log.info(
        "agent started",
        extra={
            "agent_id": config.agent_id,
            "partitions": sink.partitions or partitions,
            "kafka_connected": connector.connected,
            "spooled_batches": len(delivery.spool),
        },
    )
    stoppers: list[Callable[[], Awaitable[None]]] = []
    source_task: asyncio.Task[None] | None = None
    try:
        if config.otlp is not None:
            ingest = OtlpIngest(config.otlp, delivery, sink.partitions or partitions, metrics)
            if config.otlp.grpc_endpoint is not None:
                grpc_server = await start_grpc_receiver(config.otlp.grpc_endpoint, ingest)
                stoppers.append(lambda: grpc_server.stop(grace=2))
            if config.otlp.http_endpoint is not None:
                http_server = await start_http_receiver(config.otlp.http_endpoint, ingest)
                stoppers.append(http_server.stop)
        if config.files is not None:
            source = FileSource(
                config.files,
                agent_id=config.agent_id,
                checkpoints=Checkpoints(config.data_dir / "checkpoints.json"),
                delivery=delivery,
                partitions=sink.partitions or partitions,
                mapping=config.log_fields.mapping(),
                metrics=metrics,
            )
            source_task = asyncio.create_task(source.run(stop), name="file-source")
        await stop.wait()
        log.info(
            "agent stopping: no new input; finishing in-flight batches",
            extra={"grace_seconds": config.shutdown_grace_seconds},
        )
    finally:
        connect_task.cancel()
        await asyncio.gather(connect_task, return_exceptions=True)
        for stop_receiver in stoppers:
            await stop_receiver()
        if source_task is not None:
            await asyncio.gather(source_task, return_exceptions=True)
        if source is not None:
            await source.close(config.shutdown_grace_seconds)
        await delivery.stop(config.shutdown_grace_seconds)
        await sink.stop()
        await ops.stop()
        log.info("agent stopped", extra={"spooled_batches": len(delivery.spool)})
    if connector.fatal is not None:
        raise connector.fatal


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
