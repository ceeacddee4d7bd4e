"""Running the agent: sources -> delivery (memory, disk spool) -> Kafka, plus the ops endpoint.

SIGTERM/SIGINT: stop accepting (receivers first), let in-flight batches finish within the grace
period, checkpoint what Kafka acknowledged, exit. What is spooled stays for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

from tether import native
from tether.agent.checkpoint import Checkpoints
from tether.agent.config import AgentConfig
from tether.agent.delivery import Delivery
from tether.agent.metrics import AgentMetrics
from tether.agent.sinks.kafka import KafkaSink, PartitionMismatchError
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
    delivery: Delivery | None = None
    ops = OpsServer(
        config.ops.endpoint, metrics.registry, ready=lambda: delivery is not None and delivery.ready()
    )
    await ops.start()
    if not await _connect(sink, stop):
        await ops.stop()
        return
    delivery = Delivery(sink, config.spool, config.spool_directory, metrics)
    await delivery.start()
    log.info(
        "agent started",
        extra={
            "agent_id": config.agent_id,
            "partitions": sink.partitions,
            "spooled_batches": len(delivery.spool),
        },
    )
    stoppers: list[Callable[[], Awaitable[None]]] = []
    source: FileSource | None = None
    source_task: asyncio.Task[None] | None = None
    try:
        if config.otlp is not None:
            ingest = OtlpIngest(config.otlp, delivery, sink.partitions, metrics)
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
                partitions=sink.partitions,
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


async def _connect(sink: KafkaSink, stop: asyncio.Event) -> bool:
    """Start the producer, retrying while Kafka is unreachable; False when asked to stop first."""
    attempt = 0
    while not stop.is_set():
        try:
            await sink.start()
            return True
        except PartitionMismatchError:
            raise
        except (KafkaError, OSError) as error:
            attempt += 1
            delay = random.uniform(0, min(30.0, 0.5 * 2 ** min(attempt, 8)))
            log.warning(
                "Kafka unreachable at start; retrying",
                extra={"error": repr(error), "attempt": attempt, "retry_in_seconds": round(delay, 2)},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return False


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
