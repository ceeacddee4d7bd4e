"""Kafka brokers of the cluster stack: KRaft nodes that are broker and controller each, one quorum.

Every broker runs the same Maven Central jars (one `libs/` shared by all), formats its storage
with the cluster's one id, and lists all brokers as controller voters: a quorum of three that
keeps a controller with any one broker dead. Topics default to replication factor 3 and
`min.insync.replicas=2`, so an acks=all write survives the loss of any one broker.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.stack.health import StackError, port_owner_hint, tcp_open, wait_until_healthy
from tether.stack.kafka import LOG4J_PROPERTIES, KafkaServer, new_cluster_id, write_private_text
from tether.stack.process import ManagedProcess, run_checked

CLUSTER_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
num.partitions={partitions}
default.replication.factor={replication_factor}
min.insync.replicas={min_insync_replicas}
unclean.leader.election.enable=false
auto.create.topics.enable=false
offsets.topic.replication.factor={replication_factor}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={replication_factor}
transaction.state.log.min.isr={min_insync_replicas}
group.initial.rebalance.delay.ms=0
log.retention.hours=24
message.max.bytes=8388608
num.io.threads=4
num.network.threads=2
"""


@dataclass(frozen=True, kw_only=True)
class ClusterKafkaBroker(KafkaServer):
    """One broker+controller of the cluster. `bootstrap` lists every broker, as a client of a
    cluster should be given; `address` is this broker's own listener."""

    name: str  # kafka-<node id>
    node_id: int
    voters: str  # controller.quorum.voters, the same on every broker
    all_addresses: tuple[str, ...]
    libs: Path  # shared by the brokers: one copy of the jars
    cluster_id_file: Path  # the KRaft cluster id every broker formats its storage with
    replication_factor: int
    min_insync_replicas: int
    heap: str

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(self.name, self.home / "kafka.pid", self.home / "logs" / "kafka.log")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return ",".join(self.all_addresses)

    def describe(self) -> str:
        return (
            f"Kafka {self.version} (KRaft) broker+controller node {self.node_id} at {self.address}, "
            f"controller {self.host}:{self.controller_port}"
        )

    def provision(self) -> None:
        done = self.libs / ".complete"
        if done.exists():
            return
        shutil.rmtree(self.libs, ignore_errors=True)
        run_checked(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(self.deploy_dir / "kafka" / "pom.xml"),
                "dependency:copy-dependencies",
                f"-Dkafka.version={self.version}",
                f"-DoutputDirectory={self.libs}",
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
            run_checked(
                [*java, "kafka.tools.StorageTool", "format", "-t", self.cluster_id(), "-c", str(config)],
                f"formatting Kafka storage of broker {self.node_id}",
            )
        self.process.start([*java, "kafka.Kafka", str(config)], cwd=self.home)

    def cluster_id(self) -> str:
        """The id all brokers share: made by the first broker formatted, read by the others."""
        if not self.cluster_id_file.exists():
            self.cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
            self.cluster_id_file.write_text(new_cluster_id())
        return self.cluster_id_file.read_text().strip()

    def server_properties(self, data_dir: Path) -> str:
        return CLUSTER_SERVER_PROPERTIES.format(
            node_id=self.node_id,
            voters=self.voters,
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            data_dir=data_dir,
            partitions=self.partitions,
            replication_factor=self.replication_factor,
            min_insync_replicas=self.min_insync_replicas,
        )

    def _java_argv(self) -> list[str]:
        return [
            "java",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            "-cp",
            f"{self.libs}/*",
        ]

    def wait_healthy(self, timeout: float) -> None:
        """This broker answers on its own listener and is registered (unfenced) in the cluster's
        metadata. Topics are the cluster's business, made once all brokers are up."""
        wait_until_healthy(self.process, self._broker_ready, timeout=timeout, what="registered in metadata")

    def _broker_ready(self) -> bool:
        return tcp_open(self.host, self.port) and self.node_id in asyncio.run(
            registered_brokers(self.address, **self.client_options())
        )


async def registered_brokers(bootstrap: str, **client_options: Any) -> set[int]:
    """Node ids of the brokers `bootstrap` reports in the cluster's metadata (empty when unreachable)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **client_options)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return {int(broker["node_id"]) for broker in cluster.get("brokers", [])}
    except Exception:
        return set()
    finally:
        await admin.close()


async def ensure_replicated_topics(
    bootstrap: str,
    topics: tuple[str, ...] | list[str],
    partitions: int,
    replication_factor: int,
    min_insync_replicas: int,
    **client_options: Any,
) -> None:
    """Create `topics` replicated `replication_factor` times with `min.insync.replicas` set on each;
    existing topics are left as they are."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **client_options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                topic,
                partitions,
                replication_factor,
                topic_configs={"min.insync.replicas": str(min_insync_replicas)},
            )
            for topic in topics
            if topic not in existing
        ]
        if missing:
            await admin.create_topics(missing)
            await _wait_fully_replicated(admin, [t.name for t in missing], replication_factor)
    finally:
        await admin.close()


async def _wait_fully_replicated(admin: Any, topics: list[str], replication_factor: int) -> None:
    """Until every partition of `topics` has a leader and all its replicas in sync, so what the caller
    does next (produce, kill a leader) meets the topic as the cluster will keep it."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        described = await admin.describe_topics(topics)
        ready = len(described) == len(topics) and all(
            not topic.get("error_code")
            and topic["partitions"]
            and all(p["leader"] >= 0 and len(p["isr"]) == replication_factor for p in topic["partitions"])
            for topic in described
        )
        if ready:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise StackError(f"topics {', '.join(topics)} not fully replicated after 30s: {described}")
        await asyncio.sleep(0.2)
