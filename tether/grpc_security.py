"""How the collector reaches an OTLP/gRPC receiver (Jaeger) securely: TLS and request headers.

jaeger:
  endpoint: jaeger.example.com:4317
  tls: {ca_file: /etc/tether/jaeger-ca.pem}
  bearer_token_file: /run/secrets/jaeger-token      # sent as authorization: Bearer <token>
  headers: {x-scope-orgid: "${TENANT}"}             # any other metadata
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
from pydantic import Field, SecretStr, field_validator, model_validator

from tether.config import Section
from tether.secrets import SecretSection
from tether.tls import check_pem_certificates, check_readable


class GrpcTlsConfig(Section):
    ca_file: Path | None = Field(default=None, description="PEM CAs to trust; default: gRPC's own roots")
    cert_file: Path | None = Field(default=None, description="PEM client certificate (mutual TLS)")
    key_file: Path | None = Field(default=None, description="unencrypted PEM key of cert_file")
    server_name: str | None = Field(
        default=None, description="the name the server's certificate holds, when not the endpoint's host"
    )

    @field_validator("ca_file", "cert_file")
    @classmethod
    def _certificates(cls, path: Path | None) -> Path | None:
        return None if path is None else check_pem_certificates(path)

    @field_validator("key_file")
    @classmethod
    def _key(cls, path: Path | None) -> Path | None:
        return None if path is None else check_readable(path)

    @model_validator(mode="after")
    def _client_certificate(self) -> GrpcTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both for mutual TLS, or neither")
        if self.cert_file is not None and self.key_file is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
                    str(self.cert_file), str(self.key_file), password=_no_passphrase
                )
            except (ssl.SSLError, ValueError) as error:
                raise ValueError(
                    f"key_file: {self.key_file} is not the unencrypted private key of cert_file "
                    f"{self.cert_file} ({getattr(error, 'reason', None) or error})"
                ) from None
        return self

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return None if path is None else path.read_bytes()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


def _no_passphrase() -> str:
    raise ValueError("the key is encrypted; gRPC needs an unencrypted key")


class GrpcClientSecurity(SecretSection):
    """The security keys of a section that exports over OTLP/gRPC."""

    SECRETS = ("bearer_token",)

    tls: GrpcTlsConfig | None = Field(default=None, description="connect with TLS (default: plaintext)")
    bearer_token: SecretStr | None = Field(default=None, description="sent as authorization: Bearer ...")
    bearer_token_file: Path | None = None
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="gRPC metadata sent with every request (values are masked)"
    )

    @field_validator("headers")
    @classmethod
    def _metadata_keys(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key in headers:
            if not key or key != key.lower() or not key.replace("-", "").replace("_", "").isalnum():
                raise ValueError(
                    f"header {key!r}: gRPC metadata keys are lower case letters, digits, - and _"
                )
        return headers

    @model_validator(mode="after")
    def _one_authorization(self) -> GrpcClientSecurity:
        if self.has_secret("bearer_token") and "authorization" in self.headers:
            raise ValueError("bearer_token and headers.authorization both set the authorization header")
        return self

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        if self.tls is None:
            return grpc.aio.insecure_channel(endpoint)
        options = []
        if self.tls.server_name is not None:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return grpc.aio.secure_channel(endpoint, self.tls.credentials(), options=options)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        pairs = [(key, value.get_secret_value()) for key, value in self.headers.items()]
        token = self.secret("bearer_token")
        if token is not None:
            pairs.append(("authorization", f"Bearer {token.get_secret_value()}"))
        return tuple(pairs)
