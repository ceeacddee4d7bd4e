"""The whole agent (run_agent) connected to a Kafka that refuses its sends by ACL (Describe but no
Write on the topics): /readyz is not ready and says what to grant, what it accepts is spooled,
and once the sends are allowed the spool drains and it is ready again. The producer is scripted
(aiokafka's side); the sink, delivery and readiness are the agent's own."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from tests.unit.otlp_receivers import span, traces_request
from tether.agent.config import AgentConfig, KafkaSinkConfig, OtlpReceiverConfig, SpoolConfig
from tether.agent.service import run_agent
from tether.agent.sinks.kafka import AGENT_ACLS, KafkaSink
from tether.ops import OpsConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RefusingProducer:
    """Describes the topics (2 partitions); each acknowledgement fails with `error` while set."""

    def __init__(self, error: KafkaError | None) -> None:
        self.error = error
        self.acknowledged: list[tuple[str, int]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def send(self, topic: str, value: bytes, *, partition: int, headers: Any) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.error is None:
            self.acknowledged.append((topic, partition))
            ack.set_result(None)
        else:
            ack.set_exception(self.error)
        return ack


async def _readyz(http: aiohttp.ClientSession, ops: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{ops}/readyz") as response:
        return response.status, await response.json()


async def test_an_agent_refused_its_sends_spools_is_not_ready_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = RefusingProducer(TopicAuthorizationFailedError("tether.spans"))
    monkeypatch.setattr(KafkaSink, "_new_producer", lambda self: producer)
    http_port = _free_port()
    config = AgentConfig(
        agent_id="refused",
        data_dir=tmp_path / "state",
        log_level="warning",
        kafka=KafkaSinkConfig(bootstrap_servers="kafka-1:9093"),
        otlp=OtlpReceiverConfig(http_endpoint=f"127.0.0.1:{http_port}"),
        spool=SpoolConfig(spill_after_seconds=0.5),
        ops=OpsConfig(endpoint=f"127.0.0.1:{_free_port()}"),
    )
    ops = f"http://{config.ops.endpoint}"
    stop = asyncio.Event()
    agent = asyncio.create_task(run_agent(config, stop))
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 5
            while True:  # the receiver and ops endpoint start at once; connecting is quick
                try:
                    async with http.post(
                        f"http://127.0.0.1:{http_port}/v1/traces",
                        data=traces_request(*(span(f"refused {n}") for n in range(5))).SerializeToString(),
                        headers={"Content-Type": "application/x-protobuf"},
                    ) as response:
                        assert response.status == 200, await response.text()
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            deadline = time.monotonic() + 5
            while not list(config.spool_directory.glob("*.batch")):
                assert time.monotonic() < deadline, "nothing spooled"
                await asyncio.sleep(0.05)
            status, body = await _readyz(http, ops)
            assert status == 503, body
            assert body["reason"].startswith(
                "Kafka refused the sends: kafka.sasl.username: Kafka refused this user access to "
                "topic 'tether.spans'"
            )
            assert AGENT_ACLS in body["reason"]
            assert producer.acknowledged == []
            producer.error = None  # Write granted
            deadline = time.monotonic() + 15  # the spool's backoff, with jitter
            while (await _readyz(http, ops))[0] != 200:
                assert time.monotonic() < deadline, "never ready again"
                await asyncio.sleep(0.1)
        assert not list(config.spool_directory.glob("*.batch"))  # drained
        assert producer.acknowledged and {topic for topic, _ in producer.acknowledged} == {"tether.spans"}
    finally:
        stop.set()
        await asyncio.wait_for(agent, 15)
