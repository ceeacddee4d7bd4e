"""`tether stack up --cluster` (or `--brokers N --es-nodes M`): a real multi-node cluster, locally.

Three Kafka brokers in KRaft mode (each broker and controller, one quorum), topics replicated three
times with `min.insync.replicas=2`, a two-node Elasticsearch cluster with one replica per shard, and
a Jaeger: the same distributions as the open stack, with their own ports and state directory, so
the cluster runs beside the open and the secure stacks (docs/cluster-stack.md).

The fault seams the tests stand on live here: which broker leads a partition, its in-sync
replicas, `kill_hard` (SIGKILL, no shutdown) and `restart` of any one server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

from tether.stack.cluster_elasticsearch import ClusterElasticsearchNode
from tether.stack.cluster_kafka import ClusterKafkaBroker, ensure_replicated_topics
from tether.stack.health import StackError, http_get, tcp_open
from tether.stack.jaeger import JaegerServer
from tether.stack.manager import (
    ELASTICSEARCH_VERSION,
    KAFKA_VERSION,
    Report,
    Server,
    Stack,
    StackConfig,
    default_cache_dir,
    repository_deploy_dir,
)

MAX_NODES = 8  # Kafka clients 29092.., controllers 29192.., Elasticsearch 29200..: 8 each fit
TOPOLOGY_FILE = "topology.json"


def default_cluster_cache_dir() -> Path:
    configured = os.environ.get("TETHER_CLUSTER_STACK_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tether" / "stack-cluster"


def _open_stack_bin_dir() -> Path:
    return default_cache_dir() / "bin"  # the open stack's Jaeger build serves every stack


@dataclass(frozen=True)
class ClusterStackConfig(StackConfig):
    """StackConfig with the cluster's own defaults; no port is one of the open or secure stacks'.
    Memory: 512 MB heap per broker, 1 GB per Elasticsearch node (about 5 GB RSS in all)."""

    cache_dir: Path = field(default_factory=default_cluster_cache_dir)
    brokers: int = 3
    elasticsearch_nodes: int = 2
    replication_factor: int = 3
    min_insync_replicas: int = 2
    kafka_port: int = 29092  # broker i listens on kafka_port + i - 1
    kafka_controller_port: int = 29192  # broker i's controller: + i - 1
    kafka_heap: str = "512m"
    elasticsearch_port: int = 29200  # node i: + i - 1; transport + 100
    elasticsearch_heap: str = "1g"
    jaeger_otlp_grpc_port: int = 34317
    jaeger_otlp_http_port: int = 34318
    jaeger_query_port: int = 36686
    jaeger_query_grpc_port: int = 36685
    jaeger_health_port: int = 33133
    jaeger_metrics_port: int = 38888
    jaeger_bin_dir: Path = field(default_factory=_open_stack_bin_dir)

    def __post_init__(self) -> None:
        if not self.replication_factor <= self.brokers <= MAX_NODES:
            raise StackError(
                f"brokers: {self.brokers} is not between the replication factor "
                f"({self.replication_factor}) and {MAX_NODES}"
            )
        if not 2 <= self.elasticsearch_nodes <= MAX_NODES:
            raise StackError(
                f"elasticsearch_nodes: {self.elasticsearch_nodes} is not between 2 (one replica per "
                f"shard needs a second node) and {MAX_NODES}"
            )
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise StackError(
                f"min_insync_replicas: {self.min_insync_replicas} is not between 1 and the "
                f"replication factor ({self.replication_factor})"
            )

    @property
    def elasticsearch_base(self) -> Path:
        if os.geteuid() == 0 and self.cache_dir.resolve().is_relative_to(Path.home()):
            return Path("/var/lib/tether-stack-cluster")
        return self.cache_dir

    @property
    def topology(self) -> dict[str, int]:
        return {"brokers": self.brokers, "elasticsearch_nodes": self.elasticsearch_nodes}


class ClusterStack(Stack):
    """`kafka` and `elasticsearch` are broker 1 and node 1 (the master), so code written for the open
    stack runs unchanged: `kafka.bootstrap` lists every broker. `brokers` and `elasticsearch_nodes`
    are all of them."""

    config: ClusterStackConfig
    kafka: ClusterKafkaBroker
    elasticsearch: ClusterElasticsearchNode

    def __init__(self, config: ClusterStackConfig | None = None) -> None:
        self.config = c = config or ClusterStackConfig()
        deploy = repository_deploy_dir()
        addresses = tuple(f"{c.host}:{c.kafka_port + i}" for i in range(c.brokers))
        voters = ",".join(f"{i + 1}@{c.host}:{c.kafka_controller_port + i}" for i in range(c.brokers))
        self.brokers = tuple(
            ClusterKafkaBroker(
                version=KAFKA_VERSION,
                home=c.cache_dir / f"kafka-{i + 1}",
                host=c.host,
                port=c.kafka_port + i,
                controller_port=c.kafka_controller_port + i,
                partitions=c.partitions,
                topics=c.topics,
                deploy_dir=deploy,
                name=f"kafka-{i + 1}",
                node_id=i + 1,
                voters=voters,
                all_addresses=addresses,
                libs=c.cache_dir / f"kafka-{KAFKA_VERSION}-libs",
                cluster_id_file=c.cache_dir / "kafka-cluster-id",
                replication_factor=c.replication_factor,
                min_insync_replicas=c.min_insync_replicas,
                heap=c.kafka_heap,
            )
            for i in range(c.brokers)
        )
        cluster_name = "tether-cluster"
        transport = tuple(f"{c.host}:{c.elasticsearch_port + 100 + i}" for i in range(c.elasticsearch_nodes))
        self.elasticsearch_nodes = tuple(
            ClusterElasticsearchNode(
                version=ELASTICSEARCH_VERSION,
                base=c.elasticsearch_base / f"elasticsearch-{i + 1}",
                downloads=c.cache_dir / "downloads",
                state=c.cache_dir,
                host=c.host,
                port=c.elasticsearch_port + i,
                transport_port=c.elasticsearch_port + 100 + i,
                heap=c.elasticsearch_heap,
                name=f"elasticsearch-{i + 1}",
                node_number=i + 1,
                cluster_name=cluster_name,
                master_name=f"{cluster_name}-1",
                seed_hosts=transport,
            )
            for i in range(c.elasticsearch_nodes)
        )
        self.jaeger = JaegerServer(
            home=c.cache_dir / "jaeger",
            bin_dir=c.jaeger_bin_dir,
            deploy_dir=deploy,
            host=c.host,
            otlp_grpc_port=c.jaeger_otlp_grpc_port,
            otlp_http_port=c.jaeger_otlp_http_port,
            query_port=c.jaeger_query_port,
            query_grpc_port=c.jaeger_query_grpc_port,
            health_port=c.jaeger_health_port,
            metrics_port=c.jaeger_metrics_port,
        )
        self.kafka = self.brokers[0]
        self.elasticsearch = self.elasticsearch_nodes[0]
        # Their `name` is a frozen field, read-only where Server declares a variable; nothing sets it.
        members = cast(tuple[Server, ...], (*self.brokers, *self.elasticsearch_nodes))
        self.servers: tuple[Server, ...] = (*members, self.jaeger)

    def up(self, report: Report = print, timeout: float = 180.0) -> None:
        self._check_topology(record=True)
        super().up(report=report, timeout=timeout)
        began = time.monotonic()
        asyncio.run(self.create_topics(self.config.topics))
        report(
            f"topics: {', '.join(self.config.topics)} with {self.config.partitions} partitions, "
            f"replication factor {self.config.replication_factor}, "
            f"min.insync.replicas {self.config.min_insync_replicas} ({time.monotonic() - began:.1f}s)"
        )
        began = time.monotonic()
        self.wait_elasticsearch_green(timeout)
        report(
            f"elasticsearch cluster: green with {len(self.elasticsearch_nodes)} nodes "
            f"({time.monotonic() - began:.1f}s)"
        )

    def down(self, report: Report = print) -> None:
        """Stop every server at once: one broker after another, the last ones wait for a controlled
        shutdown that a quorum without its other voters can no longer grant (then SIGKILL after 30 s)."""
        self._check_topology(record=False)
        pids = [server.process.read_pid() for server in self.servers]
        for server, pid, stopped in zip(self.servers, pids, self.stop(self.servers), strict=True):
            report(f"{server.name}: {'stopped pid ' + str(pid) if stopped else 'not running'}")

    @staticmethod
    def stop(servers: Sequence[Server]) -> list[bool]:
        """Stop `servers` concurrently (see `down`); True for each one that was running."""
        if not servers:
            return []
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            return list(pool.map(lambda server: server.process.stop(), servers))

    def _check_topology(self, *, record: bool) -> None:
        """Broker and node counts are part of the data (quorum voters, shard copies): a cluster made
        with other counts is not silently reused, nor half stopped."""
        path = self.config.cache_dir / TOPOLOGY_FILE
        if path.exists():
            recorded = json.loads(path.read_text())
            if recorded != self.config.topology:
                raise StackError(
                    f"{path} records {recorded}, not {self.config.topology}: use those counts, or run "
                    f"`tether stack down --brokers {recorded.get('brokers')} "
                    f"--es-nodes {recorded.get('elasticsearch_nodes')}` and remove "
                    f"{self.config.cache_dir} and {self.config.elasticsearch_base} to make a new cluster"
                )
        elif record:
            self.config.cache_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.config.topology))

    async def create_topics(self, topics: tuple[str, ...] | list[str], partitions: int | None = None) -> None:
        """Topics as the cluster's must be: replicated `replication_factor` times, with
        `min.insync.replicas` (a topic made with replication factor 1 would refuse acks=all)."""
        await ensure_replicated_topics(
            self.kafka.bootstrap,
            topics,
            partitions or self.config.partitions,
            self.config.replication_factor,
            self.config.min_insync_replicas,
        )

    async def describe_partition(self, topic: str, partition: int = 0) -> dict[str, Any]:
        """{'leader': node id, 'replicas': [...], 'isr': [...]} of one partition, from the metadata."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap, request_timeout_ms=10000)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if described.get("error_code"):
            raise StackError(f"describing topic {topic} failed: error code {described['error_code']}")
        for entry in described["partitions"]:
            if entry["partition"] == partition:
                return {"leader": entry["leader"], "replicas": entry["replicas"], "isr": entry["isr"]}
        raise StackError(f"topic {topic} has no partition {partition}")

    def broker(self, node_id: int) -> ClusterKafkaBroker:
        return next(b for b in self.brokers if b.node_id == node_id)

    def wait_elasticsearch_green(self, timeout: float) -> None:
        """Green with every node joined: each shard's primary and replica assigned."""
        nodes = len(self.elasticsearch_nodes)
        query = urllib.parse.urlencode(
            {"wait_for_status": "green", "wait_for_nodes": str(nodes), "timeout": "5s"}
        )
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                status, body = http_get(f"{self.elasticsearch.url}/_cluster/health?{query}", timeout=10)
                health = orjson.loads(body)
                last = f"HTTP {status}: {health.get('status')}, {health.get('number_of_nodes')} nodes"
                if status == 200 and not health.get("timed_out"):
                    return
            time.sleep(0.5)
        raise StackError(f"Elasticsearch cluster not green with {nodes} nodes after {timeout:.0f}s ({last})")

    def kill_hard(self, server: ClusterKafkaBroker | ClusterElasticsearchNode, timeout: float = 30.0) -> int:
        """SIGKILL a server's whole process group (for Elasticsearch: the launcher, the node's JVM and
        its native controller), as a crash would, and wait until its port is closed. Returns the pid."""
        pid = server.process.read_pid()
        if pid is None:
            raise StackError(f"{server.name} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while server.process.is_running() or tcp_open(server.host, server.port):
            if time.monotonic() > deadline:
                raise StackError(f"{server.name} (pid {pid}) still up {timeout:.0f}s after SIGKILL")
            time.sleep(0.2)
        return pid

    def restart(
        self, server: ClusterKafkaBroker | ClusterElasticsearchNode | JaegerServer, timeout: float = 180.0
    ) -> None:
        """Start a stopped or killed server with its data as it was, and wait until it is healthy
        (a broker registered in the metadata, a node joined to the cluster)."""
        server.start()
        server.wait_healthy(timeout)

    def status_notes(self) -> list[str]:
        c = self.config
        return [
            f"kafka bootstrap: {self.kafka.bootstrap} (topics: replication factor {c.replication_factor}, "
            f"min.insync.replicas {c.min_insync_replicas})",
            f"elasticsearch: {', '.join(n.url for n in self.elasticsearch_nodes)} "
            f"(master: {self.elasticsearch.node_name}; one replica per shard)",
            f"jaeger: OTLP gRPC {self.jaeger.otlp_grpc_endpoint}, UI/API {self.jaeger.query_url}",
        ]
