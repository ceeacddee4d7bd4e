"""The secure stack's users and passwords: made once at set-up, kept in owner-only files.

`credentials.json` holds everything; each secret is also written alone under `secrets/` so a tether
config can point its `*_file` keys at it, as it would at a mounted Kubernetes Secret. Nothing here
ever prints a secret: `repr` of the dataclass hides them, and the CLI shows only the file's path.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

KAFKA_USERNAME = "tether"
KAFKA_ADMIN_USERNAME = "admin"  # the broker's own inter-broker user
ELASTICSEARCH_USERNAME = "tether"
ELASTICSEARCH_SUPERUSER = "elastic"


@dataclass(frozen=True)
class StackCredentials:
    """Who may connect to the secure stack. Both SCRAM mechanisms share each Kafka user's password."""

    file: Path
    kafka_username: str
    kafka_password: str = field(repr=False)
    kafka_admin_username: str
    kafka_admin_password: str = field(repr=False)
    elasticsearch_username: str
    elasticsearch_password: str = field(repr=False)
    elastic_password: str = field(repr=False)  # the `elastic` superuser's
    # An Elasticsearch service account token (file-based, made at set-up): `Authorization: Bearer`.
    service_token_name: str | None = None  # e.g. "elastic/fleet-server/tether"
    service_token: str | None = field(default=None, repr=False)
    api_key_id: str | None = None  # the `tether` user's API key, made once the node runs
    api_key: str | None = field(default=None, repr=False)
    # Kafka users of docs/security.md's ACLs (tether-agent, tether-collector): name -> password.
    kafka_user_passwords: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def secrets_dir(self) -> Path:
        return self.file.parent / "secrets"

    @property
    def api_key_encoded(self) -> str | None:
        """base64("id:key"): what `Authorization: ApiKey ...` and most clients' `api_key` take."""
        if self.api_key_id is None or self.api_key is None:
            return None
        return base64.b64encode(f"{self.api_key_id}:{self.api_key}".encode()).decode()

    def secret_file(self, name: str) -> Path:
        """secrets/<name>: kafka-password, kafka-password-<user> (tether-agent, tether-collector),
        elasticsearch-password, elastic-password, service-token, api-key-id, api-key, api-key-encoded."""
        return self.secrets_dir / name

    def with_service_token(self, name: str, token: str) -> StackCredentials:
        updated = replace(self, service_token_name=name, service_token=token)
        updated.save()
        return updated

    def with_api_key(self, api_key_id: str, api_key: str) -> StackCredentials:
        updated = replace(self, api_key_id=api_key_id, api_key=api_key)
        updated.save()
        return updated

    def kafka_password_of(self, username: str) -> str:
        """The password of the stack's admin, `tether`, or a user of the documented ACLs."""
        known = {
            self.kafka_username: self.kafka_password,
            self.kafka_admin_username: self.kafka_admin_password,
            **self.kafka_user_passwords,
        }
        return known[username]

    def with_kafka_users(self, usernames: list[str]) -> tuple[StackCredentials, bool]:
        """These Kafka users too (new random passwords for new ones); True when some were added."""
        missing = [name for name in usernames if name not in self.kafka_user_passwords]
        if not missing:
            return self, False
        passwords = {**self.kafka_user_passwords, **{name: _new_password() for name in missing}}
        updated = replace(self, kafka_user_passwords=passwords)
        updated.save()
        return updated, True

    def save(self) -> None:
        record = {k: v for k, v in asdict(self).items() if k != "file"}
        _write_private(self.file, json.dumps(record, indent=2) + "\n")
        singles = {
            "kafka-password": self.kafka_password,
            "elasticsearch-password": self.elasticsearch_password,
            "elastic-password": self.elastic_password,
            "service-token": self.service_token,
            "api-key-id": self.api_key_id,
            "api-key": self.api_key,
            "api-key-encoded": self.api_key_encoded,
        }
        singles.update({f"kafka-password-{name}": value for name, value in self.kafka_user_passwords.items()})
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, value in singles.items():
            if value is not None:
                _write_private(self.secret_file(name), value)

    @classmethod
    def load(cls, file: Path) -> StackCredentials:
        record = json.loads(file.read_text())
        # Only the fields this version knows: a file written by another version still loads.
        known = {f.name for f in fields(cls)} - {"file"}
        return cls(file=file, **{k: v for k, v in record.items() if k in known})


def ensure_credentials(file: Path) -> tuple[StackCredentials, bool]:
    """The stored credentials, or new random ones. True when they were made now."""
    if file.exists():
        return StackCredentials.load(file), False
    file.parent.mkdir(parents=True, exist_ok=True)
    credentials = StackCredentials(
        file=file,
        kafka_username=KAFKA_USERNAME,
        kafka_password=_new_password(),
        kafka_admin_username=KAFKA_ADMIN_USERNAME,
        kafka_admin_password=_new_password(),
        elasticsearch_username=ELASTICSEARCH_USERNAME,
        elasticsearch_password=_new_password(),
        elastic_password=_new_password(),
    )
    credentials.save()
    return credentials, True


def _new_password() -> str:
    # URL-safe characters only: the password goes into JAAS strings and `--add-scram [..]` unquoted.
    return secrets.token_urlsafe(24)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)
