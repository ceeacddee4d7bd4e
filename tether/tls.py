"""TLS client settings shared by the Kafka, Elasticsearch and Jaeger clients.

Files are checked when the configuration loads (so `validate` catches them), each error naming
its key: a missing CA bundle is `...tls.ca_file`, a key that does not match its certificate is
`...tls.key_file`. Hostname verification is on unless switched off explicitly.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from tether.secrets import SecretSection

# TLS alerts a server sends when it refuses the client certificate (mutual TLS), as OpenSSL names
# them in an SSLError's reason.
CLIENT_CERTIFICATE_REFUSED_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "UNKNOWN_CA",
    "BAD_CERTIFICATE",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_REVOKED",
)


class EncryptedKeyError(ValueError):
    pass


def check_pem_certificates(path: Path) -> Path:
    """The file exists and holds at least one PEM certificate (parsed by OpenSSL)."""
    if not path.is_file():
        raise ValueError(f"no such file {path}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError) as error:
        raise ValueError(f"{path} holds no readable PEM certificate ({_ssl_reason(error)})") from None
    return path


def check_readable(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"no such file {path}")
    try:
        path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    return path


def _ssl_reason(error: Exception) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


class TlsClientConfig(SecretSection):
    """How a client trusts its server and, for mutual TLS, proves who it is."""

    SECRETS = ("key_password",)

    ca_file: Path | None = Field(
        default=None, description="PEM bundle of the CAs to trust; default: the system's trust store"
    )
    cert_file: Path | None = Field(default=None, description="PEM client certificate (mutual TLS)")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file")
    key_password: SecretStr | None = Field(default=None, description="passphrase of an encrypted key_file")
    key_password_file: Path | None = None
    verify_hostname: bool = Field(
        default=True, description="check that the server's certificate names the host connected to"
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
    def _client_certificate(self) -> TlsClientConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both for mutual TLS, or neither")
        if self.cert_file is not None:
            try:
                self.load_client_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
            except EncryptedKeyError as error:
                raise ValueError(str(error)) from None
            except ssl.SSLError as error:
                raise ValueError(
                    f"key_file: {self.key_file} is not the private key of cert_file {self.cert_file} "
                    f"or cannot be decrypted with key_password ({_ssl_reason(error)})"
                ) from None
        return self

    def load_client_certificate(self, context: ssl.SSLContext) -> None:
        if self.cert_file is None or self.key_file is None:
            return
        password = self.secret("key_password")

        def passphrase() -> str:
            if password is None:  # never let OpenSSL prompt on a terminal
                raise EncryptedKeyError(f"key_file: {self.key_file} is encrypted: set key_password")
            return password.get_secret_value()

        context.load_cert_chain(str(self.cert_file), str(self.key_file), password=passphrase)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=None if self.ca_file is None else str(self.ca_file))
        context.check_hostname = self.verify_hostname
        self.load_client_certificate(context)
        return context
