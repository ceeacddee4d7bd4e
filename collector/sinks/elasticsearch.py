"""The Elasticsearch sink: index templates at start, then bulk indexing with deterministic ids."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from functools import partial
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import AsyncElasticsearch, TransportError

from collector.config import ElasticsearchSinkConfig
from schemas.indices import TEMPLATE_NAMES, daily_index, index_template

log = logging.getLogger("tether.collector.elasticsearch")

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True, slots=True)
class IndexRequest:
    alias: str
    doc_id: str
    timestamp_ns: int
    source: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    request: IndexRequest
    status: int
    reason: str


class ElasticsearchSink:
    def __init__(self, config: ElasticsearchSinkConfig) -> None:
        self.config = config
        self.client = AsyncElasticsearch(config.url, request_timeout=config.request_timeout_seconds)

    async def close(self) -> None:
        await self.client.close()

    async def install_templates(self) -> None:
        for name in TEMPLATE_NAMES:
            body = index_template(name)
            template = dict(body["template"])
            template["settings"] = {
                **template["settings"],
                "number_of_replicas": self.config.replicas,
                "number_of_shards": self.config.shards,
            }
            await self._retry_forever(
                partial(
                    self.client.indices.put_index_template,
                    name=name,
                    index_patterns=body["index_patterns"],
                    priority=body["priority"],
                    template=template,
                    meta=body.get("_meta"),
                ),
                what=f"installing index template {name}",
            )

    async def index(self, requests: list[IndexRequest]) -> list[Rejection]:
        """Index everything; retry transient failures until they succeed; return permanent rejections."""
        rejections: list[Rejection] = []
        remaining = requests
        attempt = 0
        while remaining:
            retry: list[IndexRequest] = []
            for start in range(0, len(remaining), self.config.bulk_max_docs):
                part = remaining[start : start + self.config.bulk_max_docs]
                operations: list[dict[str, Any]] = []
                for r in part:
                    operations.append(
                        {"index": {"_index": daily_index(r.alias, r.timestamp_ns), "_id": r.doc_id}}
                    )
                    operations.append(r.source)
                response = await self._retry_forever(
                    partial(self.client.bulk, operations=operations), what="bulk request"
                )
                if not response.get("errors"):
                    continue
                for request, item in zip(part, response["items"], strict=True):
                    result = item["index"]
                    status = int(result.get("status", 500))
                    if status < 300:
                        continue
                    if status in RETRYABLE_STATUS:
                        retry.append(request)
                    else:
                        reason = str(result.get("error", {}).get("reason", result.get("error")))
                        rejections.append(Rejection(request, status, reason))
            remaining = retry
            if remaining:
                attempt += 1
                await asyncio.sleep(_backoff(attempt))
        for rejection in rejections:
            log.error(
                "document rejected by Elasticsearch",
                extra={
                    "index": rejection.request.alias,
                    "id": rejection.request.doc_id,
                    "status": rejection.status,
                    "reason": rejection.reason,
                },
            )
        return rejections

    async def _retry_forever(self, call: Any, *, what: str) -> Any:
        """Elasticsearch unreachable or overloaded holds the pipeline back; it never loses data."""
        attempt = 0
        while True:
            try:
                return await call()
            except (TransportConnectionError, ConnectionTimeout) as error:
                problem = str(error)
            except TransportError as error:
                problem = str(error)
            except Exception as error:  # ApiError with a status
                status = getattr(getattr(error, "meta", None), "status", None)
                if status not in RETRYABLE_STATUS:
                    raise
                problem = f"HTTP {status}: {error}"
            attempt += 1
            delay = _backoff(attempt)
            log.warning(
                "Elasticsearch unavailable; retrying",
                extra={
                    "what": what,
                    "attempt": attempt,
                    "retry_in_seconds": round(delay, 2),
                    "error": problem,
                },
            )
            await asyncio.sleep(delay)


def _backoff(attempt: int, base: float = 0.2, cap: float = 10.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 16)))
