"""Kafka (the same KRaft broker) with a SASL_SSL listener and SCRAM users made at format time."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.stack.certificate_paths import StackCertificates
from tether.stack.credentials import StackCredentials
from tether.stack.kafka import KafkaServer
from tether.stack.secure_kafka_acls import create_acls, documented_acls

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
INTER_BROKER_MECHANISM = "SCRAM-SHA-512"

# The controller listener stays PLAINTEXT on 127.0.0.1: only this one process speaks on it.
# Clients verify the broker (CA, hostname); the broker verifies a client certificate when one is
# presented (`requested`), and SCRAM decides who may connect. Java's `requested` lets a handshake
# with a certificate it cannot verify go on without it, so a second listener, MTLS, requires one:
# SASL_SSL as well (the same users and ACLs), refusing a client without a valid certificate.
# The StandardAuthorizer enforces ACLs: the broker (`admin`) and the stack's own client (`tether`,
# which makes topics and reads them in tests) are super users, and so is ANONYMOUS, the principal
# of the PLAINTEXT controller listener the broker registers through (no client listener has it:
# every one authenticates with SCRAM). docs/security.md's users get exactly its ACLs.
SECURE_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=SASL_SSL://{host}:{port},MTLS://{host}:{mtls_port},CONTROLLER://{host}:{controller_port}
advertised.listeners=SASL_SSL://{host}:{port},MTLS://{host}:{mtls_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,MTLS:SASL_SSL,CONTROLLER:PLAINTEXT
listener.name.mtls.ssl.client.auth=required
sasl.enabled.mechanisms={mechanisms}
sasl.mechanism.inter.broker.protocol={inter_broker_mechanism}
{jaas_lines}
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={truststore}
ssl.client.auth=requested
ssl.endpoint.identification.algorithm=https
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users={super_users}
allow.everyone.if.no.acl.found=false
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


@dataclass(frozen=True)
class SecureKafkaServer(KafkaServer):
    certificates: StackCertificates
    credentials_file: Path  # credentials.json, made by the secure stack's set-up before start
    mtls_port: int  # the listener that requires a client certificate

    @property
    def mtls_bootstrap(self) -> str:
        return f"{self.host}:{self.mtls_port}"

    @property
    def credentials(self) -> StackCredentials:
        return StackCredentials.load(self.credentials_file)

    def describe(self) -> str:
        return (
            f"Kafka {self.version} (KRaft) SASL_SSL bootstrap {self.bootstrap} "
            f"({', '.join(SCRAM_MECHANISMS)}; client certificate required at {self.mtls_bootstrap}), "
            f"ACLs, topics {', '.join(self.topics)}"
        )

    def server_properties(self, data_dir: Path) -> str:
        c = self.credentials
        login = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{c.kafka_admin_username}" password="{c.kafka_admin_password}";'
        )
        jaas_lines = "\n".join(
            f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config={login}"
            for listener in ("sasl_ssl", "mtls")
            for mechanism in SCRAM_MECHANISMS
        )
        return SECURE_SERVER_PROPERTIES.format(
            host=self.host,
            port=self.port,
            mtls_port=self.mtls_port,
            controller_port=self.controller_port,
            mechanisms=",".join(SCRAM_MECHANISMS),
            inter_broker_mechanism=INTER_BROKER_MECHANISM,
            jaas_lines=jaas_lines,
            super_users=";".join(f"User:{name}" for name in (*self.super_users, "ANONYMOUS")),
            keystore=self.certificates.server.bundle,
            truststore=self.certificates.ca.cert,
            data_dir=data_dir,
            partitions=self.partitions,
        )

    @property
    def super_users(self) -> tuple[str, str]:
        c = self.credentials
        return (c.kafka_admin_username, c.kafka_username)

    def format_arguments(self) -> list[str]:
        c = self.credentials
        users = [(name, c.kafka_password_of(name)) for name in (*self.super_users, *c.kafka_user_passwords)]
        arguments: list[str] = []
        for mechanism in SCRAM_MECHANISMS:
            for username, password in users:
                arguments += ["--add-scram", f"{mechanism}=[name={username},password={password}]"]
        return arguments

    def client_options(self) -> dict[str, Any]:
        return kafka_client_options(self.certificates, self.credentials, INTER_BROKER_MECHANISM)

    def wait_healthy(self, timeout: float) -> None:
        super().wait_healthy(timeout)  # and the topics
        asyncio.run(create_acls(self.bootstrap, documented_acls(), **self.client_options()))


def kafka_client_options(
    certificates: StackCertificates,
    credentials: StackCredentials,
    mechanism: str = "SCRAM-SHA-512",
    *,
    password: str | None = None,
    username: str | None = None,
) -> dict[str, Any]:
    """aiokafka keyword arguments for a user (by default `tether`, a super user) over SASL_SSL,
    trusting the stack's CA."""
    context = ssl.create_default_context(cafile=str(certificates.ca.cert))
    username = username or credentials.kafka_username
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": username,
        "sasl_plain_password": credentials.kafka_password_of(username) if password is None else password,
        "ssl_context": context,
    }
