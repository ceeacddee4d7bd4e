"""`tether stack up|down|status`: provision, start, health-check and stop the local stack."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tether.stack.elasticsearch import ElasticsearchServer
from tether.stack.health import StackError
from tether.stack.jaeger import JaegerServer
from tether.stack.kafka import KafkaServer
from tether.stack.process import ManagedProcess

KAFKA_VERSION = "3.9.1"
ELASTICSEARCH_VERSION = "8.19.9"
DEFAULT_TOPICS = ("tether.logs", "tether.spans")


def default_cache_dir() -> Path:
    configured = os.environ.get("TETHER_STACK_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tether" / "stack"


def repository_deploy_dir() -> Path:
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    if not (deploy / "kafka" / "pom.xml").exists():
        raise StackError(f"{deploy} not found: `tether stack` runs from a source checkout of tether")
    return deploy


@dataclass(frozen=True)
class StackConfig:
    cache_dir: Path = field(default_factory=default_cache_dir)
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 19093
    partitions: int = 8
    topics: tuple[str, ...] = DEFAULT_TOPICS
    elasticsearch_port: int = 9200
    elasticsearch_heap: str = "1g"
    jaeger_otlp_grpc_port: int = 14317
    jaeger_otlp_http_port: int = 14318
    jaeger_query_port: int = 16686
    jaeger_query_grpc_port: int = 16685
    jaeger_health_port: int = 13133
    jaeger_metrics_port: int = 18888

    @property
    def elasticsearch_base(self) -> Path:
        # Elasticsearch runs as an unprivileged user when we are root, and that user
        # cannot enter /root: keep its files under /var/lib then.
        if os.geteuid() == 0 and self.cache_dir.resolve().is_relative_to(Path.home()):
            return Path("/var/lib/tether-stack")
        return self.cache_dir


class Server(Protocol):
    name: str

    @property
    def process(self) -> ManagedProcess: ...
    def describe(self) -> str: ...
    def provision(self) -> None: ...
    def start(self) -> None: ...
    def wait_healthy(self, timeout: float) -> None: ...


Report = Callable[[str], None]


class Stack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = c = config or StackConfig()
        deploy = repository_deploy_dir()
        self.kafka = KafkaServer(
            version=KAFKA_VERSION,
            home=c.cache_dir / f"kafka-{KAFKA_VERSION}",
            host=c.host,
            port=c.kafka_port,
            controller_port=c.kafka_controller_port,
            partitions=c.partitions,
            topics=c.topics,
            deploy_dir=deploy,
        )
        self.elasticsearch = ElasticsearchServer(
            version=ELASTICSEARCH_VERSION,
            base=c.elasticsearch_base,
            downloads=c.cache_dir / "downloads",
            state=c.cache_dir,
            host=c.host,
            port=c.elasticsearch_port,
            transport_port=c.elasticsearch_port + 100,
            heap=c.elasticsearch_heap,
        )
        self.jaeger = JaegerServer(
            home=c.cache_dir / "jaeger",
            bin_dir=c.cache_dir / "bin",
            deploy_dir=deploy,
            host=c.host,
            otlp_grpc_port=c.jaeger_otlp_grpc_port,
            otlp_http_port=c.jaeger_otlp_http_port,
            query_port=c.jaeger_query_port,
            query_grpc_port=c.jaeger_query_grpc_port,
            health_port=c.jaeger_health_port,
            metrics_port=c.jaeger_metrics_port,
        )
        self.servers: tuple[Server, ...] = (self.kafka, self.elasticsearch, self.jaeger)

    def up(self, report: Report = print, timeout: float = 180.0) -> None:
        """Provision what is missing, start what is not running, and wait until all are healthy."""
        self.config.cache_dir.mkdir(parents=True, exist_ok=True)
        for server in self.servers:
            began = time.monotonic()
            report(f"{server.name}: provisioning (cached under {self.config.cache_dir})")
            server.provision()
            report(f"{server.name}: ready to start ({time.monotonic() - began:.1f}s)")
        # Start all first, then wait: the three JVM/Go start-ups overlap.
        for server in self.servers:
            was_running = server.process.is_running()
            server.start()
            report(
                f"{server.name}: {'already running' if was_running else 'started'} "
                f"(pid {server.process.read_pid()})"
            )
        for server in self.servers:
            began = time.monotonic()
            server.wait_healthy(timeout)
            report(f"{server.name}: healthy in {time.monotonic() - began:.1f}s - {server.describe()}")

    def down(self, report: Report = print) -> None:
        for server in reversed(self.servers):
            pid = server.process.read_pid()
            stopped = server.process.stop()
            report(f"{server.name}: {'stopped pid ' + str(pid) if stopped else 'not running'}")

    def status_notes(self) -> list[str]:
        """Lines `tether stack status` adds after the servers (the secure stack: where its secrets are)."""
        return []

    def status(self) -> list[tuple[str, int | None, str, Path]]:
        """(name, pid or None, description, log file) for each server."""
        return [(s.name, s.process.read_pid(), s.describe(), s.process.log_file) for s in self.servers]
