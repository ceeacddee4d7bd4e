"""Which Elasticsearch `tether trace` and `tether logs` read, and how they authenticate.

From, in rising precedence: a YAML file's `elasticsearch` section (a collector's config file
works: its other keys there are ignored), ELASTICSEARCH_* environment variables, and
--elasticsearch-url. Secrets come from the file or the environment, never from the command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

from tether.config import ConfigError, Section, describe_error, load_config
from tether.elasticsearch_security import ElasticsearchConnection

# Environment variable -> key of the connection (TLS keys under `tls`).
ENVIRONMENT = {
    "ELASTICSEARCH_CLOUD_ID": "cloud_id",
    "ELASTICSEARCH_USERNAME": "username",
    "ELASTICSEARCH_PASSWORD": "password",
    "ELASTICSEARCH_PASSWORD_FILE": "password_file",
    "ELASTICSEARCH_API_KEY_ID": "api_key_id",
    "ELASTICSEARCH_API_KEY": "api_key",
    "ELASTICSEARCH_API_KEY_FILE": "api_key_file",
}
TLS_ENVIRONMENT = {
    "ELASTICSEARCH_CA_FILE": "ca_file",
    "ELASTICSEARCH_SSL_ASSERT_FINGERPRINT": "ssl_assert_fingerprint",
    "ELASTICSEARCH_CERT_FILE": "cert_file",
    "ELASTICSEARCH_KEY_FILE": "key_file",
}


class _ReaderConnection(ElasticsearchConnection):
    """The connection keys of an `elasticsearch` section; the collector's indexing keys are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class _ReaderSettings(Section):
    elasticsearch: _ReaderConnection


class _ReaderFile(Section):
    model_config = ConfigDict(extra="ignore", frozen=True)

    elasticsearch: dict[str, Any] = Field(default_factory=dict)


def load_connection(
    url: str | None, config_file: Path | None, environ: Mapping[str, str] | None = None
) -> ElasticsearchConnection:
    """The connection to read from; raises tether.config.ConfigError naming each wrong key."""
    environ = os.environ if environ is None else environ
    section: dict[str, Any] = {}
    if config_file is not None:
        section = dict(load_config(config_file, _ReaderFile, environ).elasticsearch)
    for variable, key in ENVIRONMENT.items():
        if environ.get(variable):
            section[key] = environ[variable]
    tls = {key: environ[variable] for variable, key in TLS_ENVIRONMENT.items() if environ.get(variable)}
    if tls:
        section["tls"] = {**(section.get("tls") or {}), **tls}
    if url is not None:  # the command line (or ELASTICSEARCH_URL) wins over the file's address
        section["url"] = url
        section.pop("cloud_id", None)
    source = str(config_file) if config_file is not None else "environment"
    try:
        return _ReaderSettings.model_validate({"elasticsearch": section}).elasticsearch
    except ValidationError as error:
        raise ConfigError(source, [describe_error(e) for e in error.errors()]) from None
