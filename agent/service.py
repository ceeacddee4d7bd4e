"""Running the agent: wire sources to the Kafka sink, stop gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from agent.checkpoint import Checkpoints
from agent.config import AgentConfig
from agent.sinks.kafka import KafkaSink
from agent.sources.file import FileSource
from agent.sources.otlp_grpc import start_grpc_receiver
from schemas.log_fields import default_mapping
from tether.logs import configure_logging

log = logging.getLogger("tether.agent")


async def run_agent(config: AgentConfig, stop: asyncio.Event | None = None) -> None:
    configure_logging(config.log_level)
    stop = stop or _stop_on_signals()
    sink = KafkaSink(config.kafka)
    await sink.start()
    log.info("agent started", extra={"agent_id": config.agent_id, "partitions": sink.partitions})
    tasks: list[asyncio.Task[None]] = []
    server = None
    try:
        if config.files is not None:
            source = FileSource(
                config.files,
                agent_id=config.agent_id,
                checkpoints=Checkpoints(config.data_dir / "checkpoints.json"),
                sink=sink,
                mapping=default_mapping(),
            )
            tasks.append(asyncio.create_task(source.run(stop), name="file-source"))
        if config.otlp is not None:
            server = await start_grpc_receiver(config.otlp, sink)
        await stop.wait()
        log.info("agent stopping: draining in-flight work")
    finally:
        if server is not None:
            await server.stop(grace=5)
        await asyncio.gather(*tasks, return_exceptions=True)
        await sink.stop()
        log.info("agent stopped")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
