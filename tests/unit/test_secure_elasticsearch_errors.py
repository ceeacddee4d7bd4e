"""A 401 for an API key says why Elasticsearch refused it: unknown to the cluster or invalidated
(its `additional_unsuccessful_credentials`, as an 8.x node sends it), never the key's secret."""

from __future__ import annotations

from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import AuthenticationException

from tether.elasticsearch_errors import explain
from tether.elasticsearch_security import ElasticsearchConnection

SECRET = "c2VjcmV0LW5ldmVyLXNob3du"
GENERIC = (
    "unable to authenticate with provided credentials and anonymous access is not allowed for this request"
)


def refusal(detail: str | None) -> AuthenticationException:
    error: dict[str, Any] = {"type": "security_exception", "reason": GENERIC}
    if detail is not None:
        error["additional_unsuccessful_credentials"] = detail
    meta = ApiResponseMeta(401, "1.1", HttpHeaders(), 0.01, NodeConfig("https", "es-1", 9200))
    return AuthenticationException(GENERIC, meta, {"error": error, "status": 401})


@pytest.mark.parametrize(
    "detail",
    [
        "API key: unable to find apikey with id Vx9kRaIBb7pntXtyL4fA",
        "API key: api key [Vx9kRaIBb7pntXtyL4fA] has been invalidated",
    ],
)
def test_api_key_refusals_say_which(detail: str) -> None:
    connection = ElasticsearchConnection.model_validate({"url": "https://es-1:9200", "api_key": SECRET})
    problem = explain(refusal(detail), connection, "elasticsearch")
    assert problem is not None and problem.startswith("elasticsearch.api_key: authentication failed at")
    assert detail in problem and "make a new one" in problem
    assert SECRET not in problem


def test_without_the_detail_the_reason_alone() -> None:
    connection = ElasticsearchConnection.model_validate(
        {"url": "https://es-1:9200", "username": "tether", "password": SECRET}
    )
    problem = explain(refusal(None), connection, "elasticsearch")
    assert problem is not None and problem.startswith("elasticsearch.password: authentication failed")
    assert problem.endswith(f"({GENERIC})")
