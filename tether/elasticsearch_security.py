"""How tether connects to Elasticsearch: address, TLS and credentials, for the collector and the CLI.

One model, ElasticsearchConnection, is the connection part of the collector's `elasticsearch`
section and of the file `tether trace`/`tether logs` read; `client_kwargs()` makes the arguments of
AsyncElasticsearch from it.

    elasticsearch:
      url: https://es.example.com:9200
      tls: {ca_file: /etc/tether/es-ca.pem}          # or ssl_assert_fingerprint: "AB:CD:..."
      api_key_file: /run/secrets/es-api-key          # or username + password(_file), or cloud_id
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from tether.secrets import SecretSection
from tether.tls import TlsClientConfig

DEFAULT_URL = "http://127.0.0.1:9200"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ElasticsearchTlsConfig(TlsClientConfig):
    ssl_assert_fingerprint: str | None = Field(
        default=None,
        description="SHA-256 fingerprint of the server's certificate (hex, colons allowed), trusted "
        "instead of a CA (Elasticsearch prints it at first start)",
    )

    @field_validator("ssl_assert_fingerprint")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.replace(":", "").strip().lower()
        if not _SHA256_HEX.match(digits):
            raise ValueError("expected the certificate's SHA-256 fingerprint: 64 hex digits, colons allowed")
        return digits

    @model_validator(mode="after")
    def _one_trust_anchor(self) -> ElasticsearchTlsConfig:
        if self.ssl_assert_fingerprint is not None and (
            self.ca_file is not None or self.cert_file is not None
        ):
            raise ValueError("ssl_assert_fingerprint replaces ca_file and client certificates: keep one way")
        return self


class ElasticsearchConnection(SecretSection):
    """Where Elasticsearch is and how to prove who we are to it."""

    SECRETS = ("password", "api_key")

    url: str = Field(
        default=DEFAULT_URL,
        description="http(s)://host:port of a node (or a load balancer), or several nodes of one "
        "cluster separated by commas: requests are spread over them and one that fails is retried "
        "on another",
    )
    cloud_id: str | None = Field(default=None, description="Elastic Cloud deployment id, instead of url")
    username: str | None = Field(default=None, description="basic authentication, with password")
    password: SecretStr | None = None
    password_file: Path | None = None
    api_key_id: str | None = Field(default=None, description="with api_key: the key's id")
    api_key: SecretStr | None = Field(
        default=None, description="an API key: the encoded form, or the key itself with api_key_id"
    )
    api_key_file: Path | None = None
    tls: ElasticsearchTlsConfig | None = Field(default=None, description="with an https url or cloud_id")

    @field_validator("url")
    @classmethod
    def _plain_url(cls, value: str) -> str:
        urls = [url.strip() for url in value.split(",")]
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"expected http(s)://host:port, for example https://127.0.0.1:9200, not {url!r}"
                    " (several nodes: separated by commas)"
                )
            if parts.username or parts.password:  # would be printed wherever the url is
                raise ValueError("credentials do not belong in the url: use username and password(_file)")
        if len({urlsplit(url).scheme for url in urls}) > 1:
            raise ValueError("all nodes http:// or all https://, not both")
        return ",".join(urls)

    @property
    def urls(self) -> list[str]:
        """The nodes of `url`, one or more."""
        return self.url.split(",")

    @model_validator(mode="after")
    def _credentials(self) -> ElasticsearchConnection:
        basic = self.username is not None or self.has_secret("password")
        if basic and (self.username is None or not self.has_secret("password")):
            raise ValueError("username and password (or password_file) go together")
        if basic and self.has_secret("api_key"):
            raise ValueError("give username/password or api_key, not both")
        if self.api_key_id is not None and not self.has_secret("api_key"):
            raise ValueError("api_key_id needs api_key (or api_key_file)")
        if self.cloud_id is not None and "url" in self.model_fields_set:
            raise ValueError("give url or cloud_id, not both")
        if self.tls is not None and not self.https:
            raise ValueError("tls is set but url is http://: use https://")
        return self

    @property
    def https(self) -> bool:
        return self.cloud_id is not None or self.url.startswith("https:")

    @property
    def address(self) -> str:
        """Where we connect, for messages (never with credentials)."""
        if self.cloud_id is not None:
            return f"Elastic Cloud deployment {self.cloud_id.partition(':')[0]}"
        return self.url

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of AsyncElasticsearch for this connection."""
        kwargs: dict[str, Any] = (
            {"cloud_id": self.cloud_id} if self.cloud_id is not None else {"hosts": self.urls}
        )
        password, api_key = self.secret("password"), self.secret("api_key")
        if self.username is not None and password is not None:
            kwargs["basic_auth"] = (self.username, password.get_secret_value())
        if api_key is not None:
            key = api_key.get_secret_value()
            kwargs["api_key"] = (self.api_key_id, key) if self.api_key_id else key
        if self.https:
            tls = self.tls or ElasticsearchTlsConfig()
            if tls.ssl_assert_fingerprint is not None:
                kwargs["ssl_assert_fingerprint"] = tls.ssl_assert_fingerprint
                kwargs["verify_certs"] = False  # the pinned fingerprint is the trust, not a CA
                kwargs["ssl_show_warn"] = False
            else:
                kwargs["ssl_context"] = tls.ssl_context()
        return kwargs
