"""Elasticsearch failures caused by security, told as the setting to fix.

401 and 403 answers (security_exception), TLS failures (untrusted CA, wrong hostname, a pinned
fingerprint that does not match) become one line naming the key under `prefix` (the collector's
`elasticsearch` section, or the CLI's). Elasticsearch's reasons name users and privileges, never
passwords or keys, and nothing here adds one.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

from aiohttp import ServerFingerprintMismatch
from elasticsearch import ApiError

from tether.elasticsearch_security import ElasticsearchConnection
from tether.tls import CLIENT_CERTIFICATE_REFUSED_ALERTS

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = (62, 64)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, the errors a transport error wraps, and their causes."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        # aiohttp's ClientConnectorCertificateError is an SSLCertVerificationError by inheritance
        # only: the real one, with OpenSSL's code and message, is its certificate_error.
        # ClientConnectorSSLError likewise holds OpenSSL's error as its os_error.
        inner = getattr(current, "certificate_error", None) or getattr(current, "os_error", None)
        if isinstance(inner, BaseException) and inner is not current:
            pending.insert(0, inner)
            continue
        yield current
        pending.extend(e for e in getattr(current, "errors", ()) if isinstance(e, BaseException))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)


def _reason(body: Any) -> tuple[str, str]:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        reason = str(error.get("reason", ""))
        # Why each credential failed, e.g. "API key: unable to find apikey with id ..." or "...
        # has been invalidated": the one part of a 401 that says which fix applies. It names the
        # key's id, never its secret.
        detail = error.get("additional_unsuccessful_credentials")
        if detail:
            reason = f"{reason}; {detail}" if reason else str(detail)
        return str(error.get("type", "")), reason
    return "", str(error or "")


def _credential_key(connection: ElasticsearchConnection, prefix: str) -> str:
    if connection.has_secret("api_key"):
        return f"{prefix}.api_key"
    if connection.username is not None:
        return f"{prefix}.password"
    return f"{prefix}.username"


def explain_status(
    status: int, error_type: str, reason: str, connection: ElasticsearchConnection, prefix: str
) -> str | None:
    """A refusal by status and error, also for the items of a bulk response."""
    if status == 401:
        key = _credential_key(connection, prefix)
        if key.endswith(".username"):
            return (
                f"{key}: {connection.address} requires authentication ({reason}): set username and "
                "password, or api_key"
            )
        if key.endswith(".api_key"):
            return (
                f"{key}: authentication failed at {connection.address} ({reason}): the cluster "
                "does not know this key, or it expired or was invalidated; make a new one"
            )
        return f"{key}: authentication failed at {connection.address} ({reason})"
    if status == 403 and error_type == "security_exception":
        who = f"{prefix}.api_key" if connection.has_secret("api_key") else f"{prefix}.username"
        return (
            f"{who}: not allowed at {connection.address} ({reason}): grant the privileges "
            "docs/security.md lists"
        )
    return None


def explain(error: BaseException, connection: ElasticsearchConnection, prefix: str) -> str | None:
    """The setting to fix and why, or None when the error is not about security."""
    for cause in _causes(error):
        if isinstance(cause, ApiError):
            error_type, reason = _reason(cause.body)
            return explain_status(cause.meta.status, error_type, reason or str(cause), connection, prefix)
        if isinstance(cause, ServerFingerprintMismatch):
            return (
                f"{prefix}.tls.ssl_assert_fingerprint: {connection.address} presents a certificate "
                f"with SHA-256 fingerprint {cause.got.hex()}, not the pinned one"
            )
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or str(cause)
            if cause.verify_code in _NAME_MISMATCH:
                key = f"{prefix}.cloud_id" if connection.cloud_id else f"{prefix}.url"
                return (
                    f"{key}: certificate verify failed ({why}): connect by a name the server's "
                    f"certificate holds ({prefix}.tls.verify_hostname: false only for tests)"
                )
            return (
                f"{prefix}.tls.ca_file: certificate verify failed at {connection.address} ({why}): "
                "set the CA bundle that signed the server's certificate"
            )
        if isinstance(cause, ssl.SSLError):
            why = getattr(cause, "reason", None) or str(cause)
            if "WRONG_VERSION_NUMBER" in why or "RECORD_LAYER_FAILURE" in why:
                return f"{prefix}.url: {connection.address} does not speak https ({why}): use http://"
            if any(alert in why for alert in CLIENT_CERTIFICATE_REFUSED_ALERTS):
                return (
                    f"{prefix}.tls.cert_file: {connection.address} refused the client certificate "
                    f"({why}): set a certificate (and key_file) signed by a CA the server trusts, "
                    "and not expired"
                )
            return f"{prefix}.tls: TLS handshake with {connection.address} failed ({why})"
    return None
