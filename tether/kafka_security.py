"""How both tiers connect to Kafka securely: TLS, SASL, and the aiokafka arguments they make.

The agent's `kafka` section (producer) and the collector's (consumer) both extend KafkaSecurity,
so the keys are the same in both files:

    kafka:
      bootstrap_servers: kafka-1.example.com:9093
      security_protocol: SASL_SSL
      tls: {ca_file: /etc/tether/kafka-ca.pem}
      sasl: {mechanism: SCRAM-SHA-512, username: tether-agent, password_file: /run/secrets/kafka}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from tether.config import Section
from tether.secrets import SecretSection
from tether.tls import TlsClientConfig

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
TLS_PROTOCOLS = {"SSL", "SASL_SSL"}
SASL_PROTOCOLS = {"SASL_PLAINTEXT", "SASL_SSL"}


class KafkaSaslConfig(SecretSection):
    SECRETS = ("password",)

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str = Field(min_length=1)
    password: SecretStr | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _password_given(self) -> KafkaSaslConfig:
        if not self.has_secret("password"):
            raise ValueError("password: set password (e.g. ${KAFKA_PASSWORD}) or password_file")
        return self


class KafkaSecurity(Section):
    """The security keys of a `kafka` section (both tiers)."""

    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (as the listener)"
    )
    tls: TlsClientConfig | None = Field(
        default=None, description="CA, client certificate; with SSL or SASL_SSL (default: system CAs)"
    )
    sasl: KafkaSaslConfig | None = Field(default=None, description="with SASL_PLAINTEXT or SASL_SSL")

    @model_validator(mode="after")
    def _protocol_matches(self) -> KafkaSecurity:
        protocol = self.security_protocol
        if self.tls is not None and protocol not in TLS_PROTOCOLS:
            raise ValueError(
                f"tls is set but security_protocol is {protocol}: use SSL or SASL_SSL, or remove tls"
            )
        if protocol in SASL_PROTOCOLS and self.sasl is None:
            raise ValueError(f"security_protocol {protocol} needs a sasl section (mechanism, username)")
        if self.sasl is not None and protocol not in SASL_PROTOCOLS:
            raise ValueError(
                f"sasl is set but security_protocol is {protocol}: use SASL_SSL (or SASL_PLAINTEXT)"
            )
        return self

    def aiokafka_security_kwargs(self) -> dict[str, Any]:
        """The security keyword arguments of AIOKafkaProducer and AIOKafkaConsumer."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in TLS_PROTOCOLS:
            kwargs["ssl_context"] = (self.tls or TlsClientConfig()).ssl_context()
        if self.sasl is not None:
            password = self.sasl.secret("password")
            assert password is not None  # checked when loaded
            kwargs["sasl_mechanism"] = self.sasl.mechanism
            kwargs["sasl_plain_username"] = self.sasl.username
            kwargs["sasl_plain_password"] = password.get_secret_value()
        return kwargs
