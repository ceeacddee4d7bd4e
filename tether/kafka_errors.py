"""Kafka connection failures caused by security, told as the setting to fix.

aiokafka reports a failed start as "Unable to bootstrap from [...]" and keeps the cause to its own
log, so `diagnose` opens one connection to the first broker with the same settings and explains
what that raised. Messages never hold a password: only key names, hosts and OpenSSL's reasons.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)

from tether.kafka_security import TLS_PROTOCOLS, KafkaSecurity
from tether.tls import CLIENT_CERTIFICATE_REFUSED_ALERTS

# OpenSSL's X509_V_ERR_* codes that point at a particular setting.
_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_CERT_HAS_EXPIRED = 10
# Alerts a broker sends when it refuses our client certificate (mutual TLS).
_CLIENT_CERT_REFUSED = CLIENT_CERTIFICATE_REFUSED_ALERTS


class KafkaSecurityError(KafkaError):  # type: ignore[misc]
    """Kafka refused the connection for a reason the configuration must fix; str() says which key."""

    def __str__(self) -> str:  # KafkaError's would put the class name before the key
        return str(self.args[0]) if self.args else ""


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def explain(error: BaseException, config: KafkaSecurity, broker: str = "the broker") -> str | None:
    """The setting to fix and why, or None when the error is not about security."""
    for cause in _causes(error):
        message = _explain_one(cause, config, broker)
        if message is not None:
            return message
    return None


def _explain_one(error: BaseException, config: KafkaSecurity, broker: str) -> str | None:
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or str(error)
        if error.verify_code in _NAME_MISMATCH:
            return (
                f"kafka.bootstrap_servers: certificate verify failed at {broker} ({reason}): connect by "
                "a name the broker's certificate holds (kafka.tls.verify_hostname: false only for tests)"
            )
        if error.verify_code == _CERT_HAS_EXPIRED:
            return f"kafka.tls.ca_file: certificate verify failed at {broker} ({reason}): renew the broker's"
        return (
            f"kafka.tls.ca_file: certificate verify failed at {broker} ({reason}): set the CA bundle "
            "that signed the broker's certificate"
        )
    if isinstance(error, ssl.SSLError):
        reason = error.reason or str(error)
        if any(alert in reason for alert in _CLIENT_CERT_REFUSED):
            return (
                f"kafka.tls.cert_file: {broker} refused the client certificate ({reason}): set a "
                "certificate (and key_file) signed by a CA the broker trusts, and not expired"
            )
        if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason:
            return (
                f"kafka.security_protocol: {config.security_protocol} but {broker} does not speak TLS "
                f"there ({reason}): use the protocol of the broker's listener"
            )
        return f"kafka.tls: TLS handshake with {broker} failed ({reason})"
    if (
        isinstance(error, ConnectionResetError | ssl.SSLEOFError)
        and config.security_protocol in TLS_PROTOCOLS
    ):
        # A plaintext listener drops a TLS ClientHello as a malformed request.
        return (
            f"kafka.security_protocol: {broker} closed the connection as TLS began: if its listener is "
            f"not TLS, use {'PLAINTEXT' if config.security_protocol == 'SSL' else 'SASL_PLAINTEXT'}"
        )
    if isinstance(error, SaslAuthenticationFailed):
        user = config.sasl.username if config.sasl else "?"
        return (
            f"kafka.sasl.password: authentication failed for user {user!r} at {broker}: check "
            "kafka.sasl.username, kafka.sasl.password and kafka.sasl.mechanism"
        )
    if isinstance(error, UnsupportedSaslMechanismError):
        mechanism = config.sasl.mechanism if config.sasl else "?"
        return f"kafka.sasl.mechanism: {broker} does not enable {mechanism} ({error})"
    if isinstance(error, IllegalSaslStateError):
        return (
            f"kafka.security_protocol: {broker} refused the SASL handshake ({error}): its listener "
            "takes no SASL; use its protocol (PLAINTEXT or SSL) and remove kafka.sasl"
        )
    return None


_RESOURCES: dict[type[KafkaError], str] = {
    TopicAuthorizationFailedError: "topic",
    GroupAuthorizationFailedError: "group",
    ClusterAuthorizationFailedError: "cluster",
}


def explain_authorization(error: BaseException, needs: str) -> str | None:
    """An ACL refusal (the user authenticated but may not use a topic, group or the cluster), told
    as the user to fix and the ACLs it `needs`; None for any other error."""
    for cause in _causes(error):
        resource = next((r for kind, r in _RESOURCES.items() if isinstance(cause, kind)), None)
        if resource is not None:
            names = ", ".join(sorted(repr(str(a)) for a in _flatten(cause.args))) if cause.args else ""
            return (
                f"kafka.sasl.username: Kafka refused this user access to {resource} {names} "
                f"({type(cause).__name__}): grant it {needs} (Kafka ACLs, docs/security.md), "
                "or set a user that has them"
            ).replace("  ", " ")
    return None


def _flatten(args: tuple[object, ...]) -> list[object]:
    # aiokafka raises TopicAuthorizationFailedError(topic) or (set of topics)
    return [item for arg in args for item in (arg if isinstance(arg, set | frozenset | list) else [arg])]


async def diagnose(config: KafkaSecurity, bootstrap_servers: str, timeout_ms: int = 10_000) -> str | None:
    """Connect once to the first broker as the client would; the setting to fix, if security failed."""
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    broker = f"{host}:{port}"
    if not port.isdigit():
        return None
    try:
        connection = await create_conn(
            host, int(port), request_timeout_ms=timeout_ms, **config.aiokafka_security_kwargs()
        )
    except Exception as error:
        return explain(error, config, broker)
    connection.close()
    return None
