"""Apache Kafka in KRaft mode (one broker+controller) from Maven Central jars."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.stack.health import StackError, port_owner_hint, tcp_open, wait_until_healthy
from tether.stack.process import ManagedProcess, run_checked

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
num.partitions={partitions}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
message.max.bytes=8388608
"""

LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.controller=WARN
"""


@dataclass(frozen=True)
class KafkaServer:
    version: str
    home: Path
    host: str
    port: int
    controller_port: int
    partitions: int
    topics: tuple[str, ...]
    deploy_dir: Path

    name = "kafka"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("kafka", self.home / "kafka.pid", self.home / "logs" / "kafka.log")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"Kafka {self.version} (KRaft) bootstrap {self.bootstrap}, topics {', '.join(self.topics)}"

    def provision(self) -> None:
        libs, done = self.home / "libs", self.home / "libs" / ".complete"
        if done.exists():
            return
        shutil.rmtree(libs, ignore_errors=True)
        run_checked(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(self.deploy_dir / "kafka" / "pom.xml"),
                "dependency:copy-dependencies",
                f"-Dkafka.version={self.version}",
                f"-DoutputDirectory={libs}",
                "-DincludeScope=runtime",
            ],
            "resolving Kafka from Maven Central",
        )
        done.touch()

    def start(self) -> None:
        if self.process.is_running():
            return
        if tcp_open(self.host, self.port):
            raise StackError(port_owner_hint(self.host, self.port))
        data_dir, config = self.home / "data", self.home / "server.properties"
        self.home.mkdir(parents=True, exist_ok=True)
        write_private_text(config, self.server_properties(data_dir))
        (self.home / "log4j.properties").write_text(LOG4J_PROPERTIES)
        java = self._java_argv()
        if not (data_dir / "meta.properties").exists():
            cluster_id = new_cluster_id()
            run_checked(
                [
                    *java,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(config),
                    *self.format_arguments(),
                ],
                "formatting Kafka storage",
            )
        self.process.start([*java, "kafka.Kafka", str(config)], cwd=self.home)

    def server_properties(self, data_dir: Path) -> str:
        return SERVER_PROPERTIES.format(
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            data_dir=data_dir,
            partitions=self.partitions,
        )

    def format_arguments(self) -> list[str]:
        """Extra `kafka-storage format` arguments (the secure broker's SCRAM users)."""
        return []

    def client_options(self) -> dict[str, Any]:
        """aiokafka client keyword arguments for reaching this broker (security settings)."""
        return {}

    def _java_argv(self) -> list[str]:
        return [
            "java",
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            "-cp",
            f"{self.home / 'libs'}/*",
        ]

    def wait_healthy(self, timeout: float) -> None:
        wait_until_healthy(self.process, self._broker_ready, timeout=timeout, what="broker metadata")
        asyncio.run(ensure_topics(self.bootstrap, self.topics, self.partitions, **self.client_options()))

    def _broker_ready(self) -> bool:
        return tcp_open(self.host, self.port) and asyncio.run(
            _cluster_has_broker(self.bootstrap, **self.client_options())
        )


def write_private_text(path: Path, text: str) -> None:
    """Write a file only its owner may read: the secure broker's properties hold a password."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


async def _cluster_has_broker(bootstrap: str, **client_options: Any) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **client_options)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap: str, topics: tuple[str, ...] | list[str], partitions: int, **client_options: Any
) -> None:
    """Create `topics` with `partitions` partitions each; existing topics are left as they are."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **client_options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()


async def list_topics(bootstrap: str, **client_options: Any) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **client_options)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def delete_topics(
    bootstrap: str, topics: list[str] | set[str], batch: int = 100, **client_options: Any
) -> None:
    """Delete `topics` (a batch per request: one request for thousands times out)."""
    from aiokafka.admin import AIOKafkaAdminClient

    names = sorted(topics)
    if not names:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000, **client_options)
    await admin.start()
    try:
        for start in range(0, len(names), batch):
            await admin.delete_topics(names[start : start + batch])
    finally:
        await admin.close()


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64, never starting with '-' (the storage
    tool's argument parser would take it for an option, as Kafka's own Uuid.randomUuid avoids)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id
