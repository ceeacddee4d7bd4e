"""Users, roles and API keys on the secure Elasticsearch node, for tests that need their own.

Negative and least-privilege tests make a user with exactly the documented role, an API key they
then invalidate, and so on; they do it as the `elastic` superuser through the security API. Such
users and roles are the native realm's, kept in the `.security` index (the stack's own `tether`
user is a file-realm one).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from tether.stack.credentials import ELASTICSEARCH_SUPERUSER
from tether.stack.health import StackError
from tether.stack.secure_elasticsearch import SecureElasticsearchServer, basic_authorization


@dataclass(frozen=True)
class ApiKey:
    id: str
    api_key: str = field(repr=False)

    @property
    def encoded(self) -> str:
        """base64("id:key"), what `Authorization: ApiKey ...` takes."""
        return base64.b64encode(f"{self.id}:{self.api_key}".encode()).decode()


@dataclass(frozen=True)
class ElasticsearchSecurityAdmin:
    server: SecureElasticsearchServer

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One security API call as `elastic`; raises StackError unless it succeeds."""
        authorization = basic_authorization(ELASTICSEARCH_SUPERUSER, self.server.credentials.elastic_password)
        status, raw = self.server.request(method, path, authorization, body)
        if status != 200:
            # The status and Elasticsearch's error type only: a body may echo what was sent.
            reason = orjson.loads(raw).get("error", {}) if raw else {}
            kind = reason.get("type") if isinstance(reason, dict) else None
            raise StackError(f"{method} {path}: HTTP {status} {kind or ''}".rstrip())
        result: dict[str, Any] = orjson.loads(raw)
        return result

    def put_role(self, name: str, definition: dict[str, Any]) -> None:
        """`definition`: {"cluster": [...], "indices": [{"names": [...], "privileges": [...]}]}."""
        self.call("PUT", f"/_security/role/{name}", definition)

    def put_user(self, username: str, password: str, roles: list[str]) -> None:
        self.call("PUT", f"/_security/user/{username}", {"password": password, "roles": roles})

    def create_api_key(self, name: str, role_descriptors: dict[str, Any] | None = None) -> ApiKey:
        """A key owned by `elastic`, limited to `role_descriptors` when given."""
        body: dict[str, Any] = {"name": name}
        if role_descriptors is not None:
            body["role_descriptors"] = role_descriptors
        created = self.call("POST", "/_security/api_key", body)
        return ApiKey(created["id"], created["api_key"])

    def invalidate_api_key(self, api_key_id: str) -> None:
        result = self.call("DELETE", "/_security/api_key", {"ids": [api_key_id]})
        if api_key_id not in result.get("invalidated_api_keys", []) + result.get(
            "previously_invalidated_api_keys", []
        ):
            raise StackError(f"API key {api_key_id} was not invalidated")
