"""`tether stack up --secure`: the same real servers with security on, beside the open stack.

Its own ports and its own state directory, so both stacks run at once. Set-up makes a local CA and
certificates (`certs/`) and random credentials (`credentials.json`, `secrets/`) in that directory
before the servers start; nothing is downloaded for them and nothing is committed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tether.stack.certificate_paths import StackCertificates
from tether.stack.credentials import StackCredentials, ensure_credentials
from tether.stack.health import StackError
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
from tether.stack.secure_elasticsearch import SECURITY_MARKER, SecureElasticsearchServer
from tether.stack.secure_elasticsearch_admin import ElasticsearchSecurityAdmin
from tether.stack.secure_jaeger import SecureJaegerServer
from tether.stack.secure_kafka import SecureKafkaServer
from tether.stack.secure_kafka_acls import documented_acls, users_of


def default_secure_cache_dir() -> Path:
    configured = os.environ.get("TETHER_SECURE_STACK_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tether" / "stack-secure"


def _open_stack_bin_dir() -> Path:
    # The open stack's Jaeger build: the same binary serves both, and a second Go build on a
    # small machine would cost minutes.
    return default_cache_dir() / "bin"


@dataclass(frozen=True)
class SecureStackConfig(StackConfig):
    """StackConfig with the secure stack's own defaults: every port differs from the open stack's."""

    cache_dir: Path = field(default_factory=default_secure_cache_dir)
    kafka_port: int = 19092
    kafka_controller_port: int = 19094
    kafka_mtls_port: int = 19095  # SASL_SSL that requires a client certificate
    elasticsearch_port: int = 19200  # transport: +100
    elasticsearch_heap: str = "512m"
    jaeger_otlp_grpc_port: int = 24317
    jaeger_otlp_http_port: int = 24318
    jaeger_query_port: int = 26686
    jaeger_query_grpc_port: int = 26685
    jaeger_health_port: int = 23133
    jaeger_metrics_port: int = 28888
    jaeger_bin_dir: Path = field(default_factory=_open_stack_bin_dir)
    # The `tether` Elasticsearch user's roles (file realm: built-in roles or roles.yml ones). Tests of
    # least privilege make their own role and native user with the `elastic` password.
    elasticsearch_user_roles: tuple[str, ...] = ("superuser",)

    @property
    def elasticsearch_base(self) -> Path:
        if os.geteuid() == 0 and self.cache_dir.resolve().is_relative_to(Path.home()):
            return Path("/var/lib/tether-stack-secure")
        return self.cache_dir


class SecureStack(Stack):
    """Kafka SASL_SSL + SCRAM + ACLs, Elasticsearch https + users + API key, Jaeger OTLP over TLS.

    Paths are known before set-up; `credentials` is readable once `up` has made them.
    """

    config: SecureStackConfig
    kafka: SecureKafkaServer
    elasticsearch: SecureElasticsearchServer
    jaeger: SecureJaegerServer

    def __init__(self, config: SecureStackConfig | None = None) -> None:
        self.config = c = config or SecureStackConfig()
        deploy = repository_deploy_dir()
        self.certificates = StackCertificates.at(c.cache_dir / "certs")
        self.credentials_file = c.cache_dir / "credentials.json"
        self.kafka = SecureKafkaServer(
            version=KAFKA_VERSION,
            home=c.cache_dir / f"kafka-{KAFKA_VERSION}",
            host=c.host,
            port=c.kafka_port,
            controller_port=c.kafka_controller_port,
            partitions=c.partitions,
            topics=c.topics,
            deploy_dir=deploy,
            certificates=self.certificates,
            credentials_file=self.credentials_file,
            mtls_port=c.kafka_mtls_port,
        )
        self.elasticsearch = SecureElasticsearchServer(
            version=ELASTICSEARCH_VERSION,
            base=c.elasticsearch_base,
            downloads=c.cache_dir / "downloads",
            state=c.cache_dir,
            host=c.host,
            port=c.elasticsearch_port,
            transport_port=c.elasticsearch_port + 100,
            heap=c.elasticsearch_heap,
            certificates=self.certificates,
            credentials_file=self.credentials_file,
            user_roles=c.elasticsearch_user_roles,
        )
        self.jaeger = SecureJaegerServer(
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
            certificates=self.certificates,
        )
        self.servers: tuple[Server, ...] = (self.kafka, self.elasticsearch, self.jaeger)

    @property
    def credentials(self) -> StackCredentials:
        """Users, passwords, service token, API key (read from `credentials_file`; made by `up`)."""
        if not self.credentials_file.exists():
            raise StackError(f"{self.credentials_file} does not exist yet: run `tether stack up --secure`")
        return StackCredentials.load(self.credentials_file)

    @property
    def elasticsearch_admin(self) -> ElasticsearchSecurityAdmin:
        """Roles, users and API keys made as `elastic` (least-privilege and negative tests)."""
        return ElasticsearchSecurityAdmin(self.elasticsearch)

    @property
    def secrets_dir(self) -> Path:
        """One file per secret (kafka-password, elasticsearch-password, service-token, ...)."""
        return self.credentials_file.parent / "secrets"

    def up(self, report: Report = print, timeout: float = 180.0) -> None:
        self.set_up_security(report)
        super().up(report=report, timeout=timeout)
        report(f"credentials: {self.credentials_file} (one file per secret in {self.secrets_dir})")

    def set_up_security(self, report: Report = print) -> None:
        """Make the certificates and credentials the servers are configured with, once."""
        self.config.cache_dir.mkdir(parents=True, exist_ok=True)
        self.config.cache_dir.chmod(0o700)  # the secrets live here
        from tether.stack.certificates import ensure_certificates  # needs `cryptography`

        had_certificates = self.certificates.complete()
        ensure_certificates(self.certificates.directory)
        if not had_certificates:
            report(f"certificates: made a local CA and certificates in {self.certificates.directory}")
        credentials, made = ensure_credentials(self.credentials_file)
        _, added = credentials.with_kafka_users(users_of(documented_acls()))
        if made:
            report(f"credentials: made new users and passwords in {self.credentials_file}")
            self._forget_old_users()
        elif added:  # docs/security.md names a Kafka user the broker's data was formatted without
            report(f"credentials: new Kafka users of docs/security.md in {self.credentials_file}")
            self._forget_old_users(kafka_only=True)

    def _forget_old_users(self, kafka_only: bool = False) -> None:
        """Users live in Kafka's data (its format), Elasticsearch's config files (written once, then
        marked) and .security index: new credentials need all made again, or the servers would
        still expect the old passwords. New Kafka users alone need only Kafka's data made again."""
        servers = (self.kafka,) if kafka_only else self.servers
        running = [s.name for s in servers if s.process.is_running()]
        if running:
            raise StackError(
                f"new credentials were made while {', '.join(running)} still run with the old ones: "
                "run `tether stack down --secure` and `up --secure` again"
            )
        shutil.rmtree(self.kafka.home / "data", ignore_errors=True)
        if kafka_only:
            return
        shutil.rmtree(self.elasticsearch.base / "data", ignore_errors=True)
        (self.elasticsearch.home / "config" / SECURITY_MARKER).unlink(missing_ok=True)

    def status_notes(self) -> list[str]:
        """Where the secrets and certificates are: paths only, never a secret."""
        return [
            f"certificates: {self.certificates.directory} (CA: {self.certificates.ca.cert})",
            f"credentials: {self.credentials_file} (one file per secret in {self.secrets_dir})",
        ]
