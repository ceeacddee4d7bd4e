"""The Elasticsearch sink: index templates at start, then bulk indexing with deterministic ids."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, TransportError
from elasticsearch.serializer import NdjsonSerializer, OrjsonSerializer

from tether.collector.config import ElasticsearchSinkConfig
from tether.collector.metrics import CollectorMetrics
from tether.collector.sinks.bulk import Indexable, bulk_bodies, source_json
from tether.collector.write_blocks import WriteBlocks, is_blocked_request, is_write_block
from tether.elasticsearch_errors import explain, explain_status
from tether.schemas.indices import DEADLETTER_ALIAS, TEMPLATE_NAMES, index_template

log = logging.getLogger("tether.collector.elasticsearch")

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
# A versioned document (a trace summary) refused because Elasticsearch holds a newer version:
# the newer knowledge is indexed, so this write is done, not failed.
VERSION_CONFLICT = "version_conflict_engine_exception"
# Only what is needed to tell which documents failed and why: a much smaller response to decode.
BULK_RESPONSE_FIELDS = "errors,items.*.status,items.*.error,items.*._index"


@dataclass(frozen=True, slots=True)
class IndexRequest:
    alias: str
    doc_id: str
    timestamp_ns: int
    source: dict[str, Any]
    head: bytes | None = None
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    request: Indexable
    status: int
    reason: str
    error_type: str = ""
    index: str = ""

    def deadletter(self, now_ns: int) -> IndexRequest:
        """The dead-letter document: what was refused, where, why, and the original as text."""
        return IndexRequest(
            DEADLETTER_ALIAS,
            f"{self.request.alias}:{self.request.doc_id}",  # a replay refused again is not a second letter
            now_ns,
            deadletter_source(
                now_ns,
                index=self.index or self.request.alias,
                doc_id=self.request.doc_id,
                status=self.status,
                error_type=self.error_type,
                reason=self.reason,
                original=source_json(self.request).decode(),
            ),
        )


def deadletter_source(
    now_ns: int,
    *,
    index: str,
    doc_id: str,
    status: int,
    error_type: str,
    reason: str,
    original: str,
    encoding: str = "json",
) -> dict[str, Any]:
    """A tether-deadletter document: where the original was headed, why it is here, and the
    original itself (`encoding`: "json" for a refused document, "base64" for raw record bytes)."""
    return {
        "@timestamp": now_ns // 1_000_000,
        "deadletter": {
            "index": index,
            "id": doc_id,
            "status": status,
            "error_type": error_type,
            "reason": reason,
            "original": original,
            "encoding": encoding,
        },
    }


class ElasticsearchSink:
    def __init__(self, config: ElasticsearchSinkConfig, metrics: CollectorMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.client = AsyncElasticsearch(
            **config.client_kwargs(),
            request_timeout=config.request_timeout_seconds,
            serializers={
                OrjsonSerializer.mimetype: OrjsonSerializer(),  # responses, in C
                NdjsonSerializer.mimetype: BulkBodySerializer(),  # and its compatibility mimetype
            },
        )
        self.healthy = True  # false while Elasticsearch is unreachable or overloaded
        self.write_blocks = WriteBlocks(metrics.write_blocked)

    @property
    def write_blocked(self) -> bool:
        """True while some delivery waits for a write block to lift (not ready meanwhile)."""
        return self.write_blocks.blocked

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
            await self._add_fields_to_existing_indices(name, body)

    async def _add_fields_to_existing_indices(self, name: str, body: dict[str, Any]) -> None:
        """A template applies only to indices created after it: add its fields (only adds, never
        changes one) to the daily indices that exist, or a field new in this version would not be
        searchable in today's index until tomorrow's. Best effort: without the privilege for it,
        say so and go on."""
        try:
            await self.client.indices.put_mapping(
                index=",".join(body["index_patterns"]),
                properties=body["template"]["mappings"]["properties"],
                allow_no_indices=True,
                ignore_unavailable=True,
            )
        except ApiError as error:
            log.warning(
                "the index template's fields were not added to existing daily indices; new fields "
                "become searchable from the next daily index (grant indices:admin/mapping/put on "
                "tether-* to add them at start, docs/security.md)",
                extra={"template": name, "status": error.status_code, "error": error.error},
            )

    async def index(self, requests: Sequence[Indexable]) -> list[Rejection]:
        """Index everything; retry transient failures until they succeed; return permanent rejections."""
        rejections: list[Rejection] = []
        remaining = requests
        attempt = 0
        blocks = self.write_blocks.waiter()
        try:
            while remaining:
                remaining, block = await self._index_round(remaining, rejections)
                blocks.update(block)
                if remaining:
                    attempt += 1
                    await asyncio.sleep(_backoff(attempt))
        finally:
            blocks.close()
        return rejections

    async def _index_round(
        self, requests: Sequence[Indexable], rejections: list[Rejection]
    ) -> tuple[list[Indexable], str | None]:
        """One bulk pass over `requests`: what to retry, and the reason of a write block if any."""
        retry: list[Indexable] = []
        block: str | None = None
        for part, body in bulk_bodies(requests, self.config.bulk_max_docs, self.config.bulk_max_bytes):
            started = time.monotonic()
            response = await self._retry_forever(
                # bytes pass through the NDJSON serializer untouched (the stub only names mappings)
                partial(self.client.bulk, operations=body, filter_path=BULK_RESPONSE_FIELDS),  # type: ignore[arg-type]
                what="bulk request",
            )
            self.metrics.bulk_latency.observe(time.monotonic() - started)
            if not response.get("errors"):
                continue
            for request, item in zip(part, response["items"], strict=True):
                result = item["index"]
                status = int(result.get("status", 500))
                if status < 300:
                    continue
                error = result.get("error") or {}
                if is_write_block(error):  # 403 or 429: never the document's fault
                    retry.append(request)
                    block = str(error.get("reason", "blocked"))
                    self.metrics.bulk_retries.labels("blocked").inc()
                    continue
                if status in RETRYABLE_STATUS:
                    retry.append(request)
                    self.metrics.bulk_retries.labels(str(status)).inc()
                    continue
                reason = str(error.get("reason", error)) if isinstance(error, dict) else str(error)
                kind = str(error.get("type", "")) if isinstance(error, dict) else ""
                refusal = explain_status(status, kind, reason, self.config, "elasticsearch")
                if refusal is not None:  # a missing privilege is fixed by an operator: hold it
                    retry.append(request)
                    self._refused(refusal)
                    continue
                if status == 409 and kind == VERSION_CONFLICT and request.version is not None:
                    self.metrics.superseded.labels(request.alias).inc()
                    continue
                rejections.append(Rejection(request, status, reason, kind, result.get("_index", "")))
        return retry, block

    async def deadletter(self, rejections: list[Rejection]) -> None:
        """Keep what Elasticsearch refused for good in the dead-letter index, counted and logged."""
        if not rejections:
            return
        now = time.time_ns()
        for rejection in rejections:
            self.metrics.deadlettered.labels(rejection.request.alias).inc()
            log.error(
                "document refused by Elasticsearch; sent to the dead-letter index",
                extra={
                    "index": rejection.request.alias,
                    "id": rejection.request.doc_id,
                    "status": rejection.status,
                    "reason": rejection.reason,
                },
            )
        unplaceable = await self.index([r.deadletter(now) for r in rejections])
        for failure in unplaceable:  # the dead-letter mapping takes any text: this is a bug, say so loudly
            log.critical("dead-letter document refused too", extra={"reason": failure.reason})

    async def _retry_forever(self, call: Any, *, what: str) -> Any:
        """Elasticsearch unreachable or overloaded holds the pipeline back; it never loses data."""
        attempt = 0
        blocks = self.write_blocks.waiter()
        try:
            while True:
                try:
                    result = await call()
                    self.healthy = True
                    return result
                except Exception as error:
                    # A refusal the configuration must fix (TLS, credentials, privileges) holds the
                    # pipeline back like an outage, and says which key to fix.
                    refusal = explain(error, self.config, "elasticsearch")
                    if refusal is not None:
                        attempt += 1
                        self.healthy = False
                        self.metrics.bulk_retries.labels("security").inc()
                        await self._wait_unavailable(what, attempt, refusal, refused=True)
                        continue
                    if isinstance(error, TransportError):  # unreachable, timed out
                        problem = str(error)
                    else:  # ApiError with a status
                        status = getattr(getattr(error, "meta", None), "status", None)
                        if is_blocked_request(error):  # a cluster block: wait for it, reachable as we are
                            attempt += 1
                            blocks.update(f"HTTP {status}: {error}")
                            self.metrics.bulk_retries.labels("blocked").inc()
                            await asyncio.sleep(_backoff(attempt))
                            continue
                        if status not in RETRYABLE_STATUS:
                            raise
                        problem = f"HTTP {status}: {error}"
                attempt += 1
                self.healthy = False
                self.metrics.bulk_retries.labels("unavailable").inc()
                await self._wait_unavailable(what, attempt, problem)
        finally:
            blocks.close()

    def _refused(self, problem: str) -> None:
        self.healthy = False
        self.metrics.bulk_retries.labels("security").inc()
        log.error("Elasticsearch refused documents; retrying", extra={"error": problem})

    async def _wait_unavailable(
        self, what: str, attempt: int, problem: str, *, refused: bool = False
    ) -> None:
        """Log that Elasticsearch is unreachable, overloaded or refusing us (`refused`: TLS,
        credentials, privileges; `problem` names the key to fix), and wait before the next attempt."""
        delay = _backoff(attempt)
        log.log(
            logging.ERROR if refused else logging.WARNING,
            "Elasticsearch refused the connection; retrying"
            if refused
            else "Elasticsearch unavailable; retrying",
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


class BulkBodySerializer(NdjsonSerializer):
    """NDJSON whose bulk bodies are already encoded (`bulk.bulk_bodies`): sent as they are. The
    client's own serializer copies each body into a buffer and then into bytes again, two more
    copies of every request in flight."""

    def dumps(self, data: Any) -> bytes:
        if isinstance(data, bytes) and data.endswith(b"\n"):
            return data
        return super().dumps(data)
