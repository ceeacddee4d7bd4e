"""Security API calls on the secure Elasticsearch node as the `elastic` superuser.

Only calls that need no `.security` index work on this distribution (docs/secure-stack.md): reading
who a request authenticates as, the file realm's users and roles, cluster state. Creating users,
roles or API keys through the API answers an error, so there are no helpers for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tether.stack.credentials import ELASTICSEARCH_SUPERUSER
from tether.stack.health import StackError
from tether.stack.secure_elasticsearch import SecureElasticsearchServer, basic_authorization


@dataclass(frozen=True)
class ElasticsearchSecurityAdmin:
    server: SecureElasticsearchServer

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call as `elastic`; raises StackError unless it succeeds."""
        authorization = basic_authorization(ELASTICSEARCH_SUPERUSER, self.server.credentials.elastic_password)
        status, raw = self.server.request(method, path, authorization, body)
        if status != 200:
            # The status and Elasticsearch's error type only: a body may echo what was sent.
            reason = orjson.loads(raw).get("error", {}) if raw else {}
            kind = reason.get("type") if isinstance(reason, dict) else None
            raise StackError(f"{method} {path}: HTTP {status} {kind or ''}".rstrip())
        result: dict[str, Any] = orjson.loads(raw)
        return result
