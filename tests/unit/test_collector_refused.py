"""A collector whose Kafka refuses it (an untrusted CA here) keeps running, retrying, says not
ready on /readyz, and still stops when asked: the whole process, in-process, against a local TLS
listener and a local Elasticsearch stand-in that accepts the index templates."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.unit.test_kafka_security_errors import tls_listener
from tests.unit.tls_certificates import authority
from tests.unit.tls_servers import https_peer, server_context
from tether.collector.config import CollectorConfig
from tether.collector.service import run_collector


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """run_collector configures the root logger for the process; give the next tests theirs back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("_restore_logging")
async def test_refused_collector_retries_not_ready_and_stops(tmp_path: Path) -> None:
    ca = authority(tmp_path / "ca")
    other = authority(tmp_path / "other", "other CA")
    ops = f"127.0.0.1:{_free_port()}"
    async with (
        tls_listener(server_context(ca.issue("broker"))) as kafka_port,
        https_peer(server_context(ca.issue("es"))) as elasticsearch,
    ):
        elasticsearch.answers = [(200, {"acknowledged": True})]
        config = CollectorConfig.model_validate(
            {
                "kafka": {
                    "bootstrap_servers": f"127.0.0.1:{kafka_port}",
                    "security_protocol": "SSL",
                    "tls": {"ca_file": other.ca_file},
                },
                "elasticsearch": {"url": elasticsearch.url, "tls": {"ca_file": ca.ca_file}},
                "jaeger": {"enabled": False},
                "ops": {"endpoint": ops},
            }
        )
        stop = asyncio.Event()
        running = asyncio.create_task(run_collector(config, stop))
        statuses: list[int] = []
        async with aiohttp.ClientSession() as http:
            for _ in range(100):  # templates installed, then Kafka refused: still running, not ready
                await asyncio.sleep(0.1)
                assert not running.done(), running.exception() if running.done() else ""
                try:
                    async with http.get(f"http://{ops}/readyz") as response:
                        statuses.append(response.status)
                except aiohttp.ClientConnectionError:
                    continue
                if len(statuses) >= 20 and len(elasticsearch.requests) == 8:  # 2 s and more, refused
                    break
        stop.set()
        await asyncio.wait_for(running, 15)  # ends although the consumer never started
    assert len(elasticsearch.requests) == 8  # the four index templates, their fields on existing indices
    assert statuses and set(statuses) == {503}
