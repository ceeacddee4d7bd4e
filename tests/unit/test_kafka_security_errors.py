"""Kafka refusals caused by security name the setting to fix: real TLS handshakes against a local
TLS listener (certificates from a throwaway CA), and aiokafka's own SASL exceptions."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)

from tests.unit.tls_certificates import Authority, authority
from tests.unit.tls_servers import server_context
from tether.agent.config import KafkaSinkConfig
from tether.agent.kafka_connector import KafkaConnector
from tether.agent.partition_memory import PartitionMemory
from tether.agent.sinks.kafka import KafkaSink
from tether.collector.config import KafkaSourceConfig
from tether.collector.kafka import KafkaConsumer
from tether.kafka_errors import KafkaSecurityError, diagnose, explain, explain_authorization
from tether.kafka_security import KafkaSecurity

PASSWORD = "kafka-Pa55word-never-shown"


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return authority(tmp_path / "ca")


@asynccontextmanager
async def tls_listener(context: ssl.SSLContext) -> AsyncIterator[int]:
    """A TLS listener that completes handshakes and then says nothing (a broker that is slow to
    answer): what matters here is the handshake."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError, ssl.SSLError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def security(**settings: Any) -> KafkaSecurity:
    return KafkaSecurity.model_validate(settings)


async def test_untrusted_ca_names_ca_file(tmp_path: Path, ca: Authority) -> None:
    other = authority(tmp_path / "other", "other CA")
    async with tls_listener(server_context(ca.issue("broker"))) as port:
        config = security(security_protocol="SSL", tls={"ca_file": other.ca_file})
        problem = await diagnose(config, f"127.0.0.1:{port}", timeout_ms=2000)
    assert problem is not None
    assert problem.startswith(f"kafka.tls.ca_file: certificate verify failed at 127.0.0.1:{port}")
    assert "unable to get local issuer certificate" in problem


async def test_wrong_hostname_names_bootstrap_servers(ca: Authority) -> None:
    async with tls_listener(server_context(ca.issue("broker", ("kafka-1.example",)))) as port:
        config = security(security_protocol="SSL", tls={"ca_file": ca.ca_file})
        problem = await diagnose(config, f"localhost:{port}", timeout_ms=2000)
    assert problem is not None and problem.startswith("kafka.bootstrap_servers: certificate verify failed")
    assert "Hostname mismatch" in problem


async def test_expired_broker_certificate(ca: Authority) -> None:
    async with tls_listener(server_context(ca.issue("broker", expired=True))) as port:
        config = security(security_protocol="SSL", tls={"ca_file": ca.ca_file})
        problem = await diagnose(config, f"127.0.0.1:{port}", timeout_ms=2000)
    assert problem is not None and "certificate has expired" in problem


async def test_trusted_handshake_is_not_a_security_problem(ca: Authority) -> None:
    async with tls_listener(server_context(ca.issue("broker"))) as port:
        config = security(security_protocol="SSL", tls={"ca_file": ca.ca_file})
        assert await diagnose(config, f"127.0.0.1:{port}", timeout_ms=500) is None


async def test_tls_to_a_plaintext_listener_names_security_protocol() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # a Kafka listener reads a size, finds it absurd, and closes
        writer.transport.abort()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        problem = await diagnose(security(security_protocol="SSL"), f"127.0.0.1:{port}", timeout_ms=2000)
    finally:
        server.close()
    assert problem is not None and problem.startswith("kafka.security_protocol: ")
    assert "use PLAINTEXT" in problem


def test_sasl_failures_name_the_sasl_key() -> None:
    config = security(
        security_protocol="SASL_SSL",
        sasl={"mechanism": "SCRAM-SHA-256", "username": "tether", "password": PASSWORD},
    )
    # the message the broker sends back (Kafka's SaslAuthenticateResponse error_message)
    failed = SaslAuthenticationFailed(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism "
        "SCRAM-SHA-256"
    )
    problem = explain(failed, config, "kafka-1:9093")
    assert problem is not None and problem.startswith(
        "kafka.sasl.password: authentication failed for user 'tether'"
    )
    assert PASSWORD not in problem
    unsupported = UnsupportedSaslMechanismError("Kafka broker does not support SCRAM-SHA-256 sasl mechanism.")
    assert (explain(unsupported, config) or "").startswith("kafka.sasl.mechanism: the broker does not enable")


def test_errors_that_are_not_about_security() -> None:
    assert explain(ConnectionRefusedError(111, "Connect call failed"), security()) is None
    assert explain(TimeoutError(), security()) is None


async def test_agent_keeps_retrying_and_says_the_key(
    tmp_path: Path, ca: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    other = authority(tmp_path / "other", "other CA")
    async with tls_listener(server_context(ca.issue("broker"))) as port:
        config = KafkaSinkConfig.model_validate(
            {
                "bootstrap_servers": f"127.0.0.1:{port}",
                "security_protocol": "SASL_SSL",
                "tls": {"ca_file": other.ca_file},
                "sasl": {"username": "tether", "password": PASSWORD},
                "request_timeout_ms": 2000,
            }
        )
        sink = KafkaSink(config)
        with pytest.raises(KafkaSecurityError, match=r"^kafka\.tls\.ca_file: certificate verify failed"):
            await sink.start()
        stop = asyncio.Event()
        connector = KafkaConnector(
            sink, config.bootstrap_servers, PartitionMemory(tmp_path, "l", "s"), lambda _: None, 0.2
        )
        with caplog.at_level(logging.WARNING):
            connecting = asyncio.create_task(connector.run(stop))
            while connector.attempts < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            reason = connector.not_ready_reason()  # what /readyz answers meanwhile
            stop.set()
            await asyncio.wait_for(connecting, 60)
        await sink.stop()
    assert not connector.connected and connector.fatal is None
    assert reason is not None and "kafka.tls.ca_file: certificate verify failed" in reason
    retries = [r for r in caplog.records if r.getMessage().startswith("Kafka refused the connection")]
    assert retries[0].error.startswith("kafka.tls.ca_file")  # type: ignore[attr-defined]
    assert all(PASSWORD not in r.getMessage() and PASSWORD not in str(r.__dict__) for r in caplog.records)


async def test_collector_consumer_keeps_retrying(
    tmp_path: Path, ca: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    other = authority(tmp_path / "other", "other CA")
    async with tls_listener(server_context(ca.issue("broker"))) as port:
        config = KafkaSourceConfig.model_validate(
            {
                "bootstrap_servers": f"127.0.0.1:{port}",
                "security_protocol": "SSL",
                "tls": {"ca_file": other.ca_file},
            }
        )
        consumer = KafkaConsumer(config)
        with caplog.at_level(logging.ERROR):
            starting = asyncio.create_task(consumer.start())
            while len([r for r in caplog.records if r.getMessage().startswith("Kafka refused")]) < 2:
                assert not starting.done()
                await asyncio.sleep(0.05)
            starting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await starting
        await consumer.stop()
    refusals = [r for r in caplog.records if r.getMessage() == "Kafka refused the connection; retrying"]
    assert refusals[0].error.startswith("kafka.tls.ca_file: certificate verify failed")  # type: ignore[attr-defined]


async def test_an_acl_refusal_names_the_user_key_and_the_acls_to_grant(tmp_path: Path) -> None:
    """Authenticated, but the topics' metadata is refused: the agent says the ACLs it needs, keeps
    retrying and is not ready; aiokafka raises TopicAuthorizationFailedError with the topic."""

    class RefusedTopics:
        partitions = 0

        async def start(self) -> None:
            raise TopicAuthorizationFailedError("tether.logs")

    stop = asyncio.Event()
    connector = KafkaConnector(
        RefusedTopics(), "kafka-1:9093", PartitionMemory(tmp_path, "l", "s"), lambda _: None, 0.05
    )
    connecting = asyncio.create_task(connector.run(stop))
    while connector.attempts < 2:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(connecting, 10)
    reason = connector.not_ready_reason()
    assert connector.refused and connector.fatal is None
    assert reason is not None and "kafka.sasl.username: Kafka refused this user access to topic" in reason
    assert "'tether.logs'" in reason and "Write and Describe on kafka.logs_topic" in reason
    group = explain_authorization(GroupAuthorizationFailedError("tether-collector"), "Read on the group")
    assert group is not None and group.startswith("kafka.sasl.username:")
    assert "group 'tether-collector'" in group
    assert explain_authorization(ConnectionRefusedError(111, "refused"), "anything") is None
