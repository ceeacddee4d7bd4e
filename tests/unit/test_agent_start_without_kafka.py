"""The whole agent (run_agent) started with nothing listening at kafka.bootstrap_servers.

No broker: the real aiokafka client is refused by a closed local port. The receivers must answer
within two seconds, OTLP requests be accepted into the spool, /healthz say ok and /readyz say
not ready, naming the setting; the e2e test (tests/e2e/test_agent_offline.py) lets Kafka answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from tests.unit.otlp_receivers import span, traces_request
from tether.agent.config import AgentConfig, KafkaSinkConfig, OtlpReceiverConfig, SpoolConfig
from tether.agent.partition_memory import PartitionMemory
from tether.agent.service import run_agent
from tether.agent.spool import decode_batch
from tether.ops import OpsConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        agent_id="offline",
        data_dir=tmp_path / "state",
        log_level="warning",
        kafka=KafkaSinkConfig(bootstrap_servers=f"127.0.0.1:{_free_port()}", request_timeout_ms=1000),
        otlp=OtlpReceiverConfig(
            grpc_endpoint=f"127.0.0.1:{_free_port()}", http_endpoint=f"127.0.0.1:{_free_port()}"
        ),
        spool=SpoolConfig(spill_after_seconds=0.5),
        ops=OpsConfig(endpoint=f"127.0.0.1:{_free_port()}"),
    )


async def _until_listening(port: int, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return time.monotonic() - started
    raise AssertionError(f"nothing listening on {port} within {within}s")


@pytest.mark.parametrize("remembered", [None, 3])
async def test_an_agent_without_kafka_listens_at_once_and_spools_what_it_accepts(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], remembered: int | None
) -> None:
    config = _config(tmp_path)
    assert config.otlp is not None and config.otlp.http_endpoint and config.otlp.grpc_endpoint
    if remembered is not None:
        PartitionMemory(config.data_dir, config.kafka.logs_topic, config.kafka.spans_topic).remember(
            remembered
        )
    http_port = int(config.otlp.http_endpoint.rsplit(":", 1)[1])
    grpc_port = int(config.otlp.grpc_endpoint.rsplit(":", 1)[1])
    ops = f"http://{config.ops.endpoint}"
    stop = asyncio.Event()
    agent = asyncio.create_task(run_agent(config, stop))
    try:
        assert await _until_listening(http_port, 2.0) < 2.0
        assert await _until_listening(grpc_port, 2.0) < 2.0
        request = traces_request(*(span(f"offline {n}") for n in range(20)))
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{http_port}/v1/traces",
                data=request.SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
            ) as response:
                assert response.status == 200, await response.text()
            async with http.get(f"{ops}/metrics") as response:
                assert "tether_agent_kafka_connected 0.0" in await response.text()
            async with http.get(f"{ops}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{ops}/readyz") as response:
                assert response.status == 503
                body = await response.json()
        assert body["ready"] is False
        assert f"kafka.bootstrap_servers={config.kafka.bootstrap_servers}" in body["reason"]
        spooled = [decode_batch(p.read_bytes()) for p in sorted(config.spool_directory.glob("*.batch"))]
        assert len(spooled) == 1 and spooled[0].items == 20 and spooled[0].signal == "spans"
        # split for the count remembered from the last connection, else unsplit
        assert spooled[0].partitions == (remembered or 1)
        assert set(spooled[0].records) <= set(range(remembered or 1))
    finally:
        stop.set()
        await asyncio.wait_for(agent, 15)
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    unreachable = [e for e in logged if "cannot reach Kafka" in e.get("message", e.get("msg", ""))]
    assert unreachable, logged
    assert all(e.get("setting") == "kafka.bootstrap_servers" for e in unreachable)
    # what was accepted stays spooled for the next start
    assert len(list(config.spool_directory.glob("*.batch"))) == 1
