"""OTLP/gRPC export failures caused by security, told as the setting to fix.

gRPC reports TLS failures as UNAVAILABLE with the handshake's reason in the details, and refused
credentials as UNAUTHENTICATED or PERMISSION_DENIED. Details come from the server and gRPC's
TLS layer; they carry no header values of ours.
"""

from __future__ import annotations

import grpc

_UNTRUSTED = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "unable to get local issuer")
_HOSTNAME = ("Hostname Verification", "Peer name", "not in peer certificate")
_HANDSHAKE = ("Ssl handshake failed", "SSL_ERROR", "handshake", "WRONG_VERSION_NUMBER")


def explain(code: grpc.StatusCode, details: str, prefix: str) -> str | None:
    """The setting to fix and why, or None when the failure is not about security."""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (
            f"{prefix}.bearer_token: the server refused our credentials ({details}): check the token "
            "or headers"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"{prefix}.bearer_token: the credentials lack permission ({details})"
    if code != grpc.StatusCode.UNAVAILABLE:
        return None
    if any(marker in details for marker in _HOSTNAME):
        return (
            f"{prefix}.endpoint: certificate verify failed ({details}): connect by a name the "
            f"certificate holds, or set {prefix}.tls.server_name"
        )
    if any(marker in details for marker in _UNTRUSTED):
        return (
            f"{prefix}.tls.ca_file: certificate verify failed ({details}): set the CA that signed "
            "the server's certificate"
        )
    if any(marker in details for marker in _HANDSHAKE):
        return f"{prefix}.tls: TLS handshake failed ({details}): check tls (and that the receiver speaks TLS)"
    return None
