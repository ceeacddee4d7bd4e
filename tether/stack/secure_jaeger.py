"""Jaeger (the same built binary) with TLS on its OTLP gRPC and HTTP receivers."""

from __future__ import annotations

from dataclasses import dataclass

from tether.stack.certificate_paths import StackCertificates
from tether.stack.jaeger import JaegerServer


@dataclass(frozen=True)
class SecureJaegerServer(JaegerServer):
    certificates: StackCertificates

    config_template = "jaeger-secure.yaml"

    def describe(self) -> str:
        return (
            f"Jaeger {self.release} (module {self.version}) OTLP gRPC over TLS {self.otlp_grpc_endpoint}, "
            f"OTLP HTTP over TLS https://{self.host}:{self.otlp_http_port}, UI/API {self.query_url}"
        )

    def template_values(self) -> dict[str, object]:
        return {
            **super().template_values(),
            "tls_cert_file": self.certificates.server.cert,
            "tls_key_file": self.certificates.server.key,
        }
