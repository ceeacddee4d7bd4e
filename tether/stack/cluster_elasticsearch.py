"""Elasticsearch nodes of the cluster stack: the same distribution, one home and data directory each.

Node 1 is the only master-eligible node; the others hold data and run ingest pipelines. With two
master-eligible nodes Elasticsearch would leave one out of the voting configuration anyway (an even
count gains no fault tolerance), so naming the master makes explicit which node may die while
writes go on: any node but the first. Indices get one replica per shard by default, so every
shard has a copy on two nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from tether.stack.elasticsearch import ElasticsearchServer
from tether.stack.process import ManagedProcess

CLUSTER_ELASTICSEARCH_YML = """\
cluster.name: {cluster_name}
node.name: {node_name}
node.roles: [{roles}]
network.host: {host}
http.port: {port}
transport.port: {transport_port}
discovery.seed_hosts: [{seed_hosts}]
cluster.initial_master_nodes: [{master_name}]
xpack.security.enabled: false
path.data: {data}
path.logs: {logs}
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
"""

MASTER_ROLES = ("master", "data", "ingest")
DATA_ROLES = ("data", "ingest")


@dataclass(frozen=True, kw_only=True)
class ClusterElasticsearchNode(ElasticsearchServer):
    """One node; `base` is its own (home, data and logs under it), `state` holds its pid file."""

    name: str  # elasticsearch-<node number>
    node_number: int
    cluster_name: str
    master_name: str  # the node name of node 1, the cluster's only master-eligible node
    seed_hosts: tuple[str, ...]  # every node's transport address

    @property
    def node_name(self) -> str:
        return f"{self.cluster_name}-{self.node_number}"

    @property
    def is_master(self) -> bool:
        return self.node_name == self.master_name

    @property
    def roles(self) -> tuple[str, ...]:
        return MASTER_ROLES if self.is_master else DATA_ROLES

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            self.name, self.state / f"{self.name}.pid", self.base / "logs" / "elasticsearch.out"
        )

    def describe(self) -> str:
        return (
            f"Elasticsearch {self.version} node {self.node_name} ({', '.join(self.roles)}) at {self.url}, "
            f"transport {self.host}:{self.transport_port}"
        )

    def elasticsearch_yml(self) -> str:
        return CLUSTER_ELASTICSEARCH_YML.format(
            cluster_name=self.cluster_name,
            node_name=self.node_name,
            roles=", ".join(self.roles),
            host=self.host,
            port=self.port,
            transport_port=self.transport_port,
            seed_hosts=", ".join(f'"{address}"' for address in self.seed_hosts),
            master_name=f'"{self.master_name}"',
            data=self.base / "data",
            logs=self.base / "logs",
        )

    def joined_nodes(self) -> int:
        """How many nodes this node sees in its cluster (0 when it has no master or does not answer)."""
        try:
            status, body = self.health_get("/_cluster/health")
        except OSError:
            return 0
        return int(orjson.loads(body).get("number_of_nodes", 0)) if status == 200 else 0
