"""Reading traces and logs back from Elasticsearch, through the aliases the collector writes.

A missing alias (nothing indexed yet) reads as no data; an Elasticsearch that cannot be reached or
answers with an error raises `Unavailable`, which the CLI turns into one line and exit status 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from tether.elasticsearch_errors import explain
from tether.elasticsearch_security import DEFAULT_URL, ElasticsearchConnection
from tether.query.model import LogLine, SpanNode, Summary, TraceView, build_trace, iso, parse_ns
from tether.schemas.indices import LOGS_ALIAS, SPANS_ALIAS, TRACES_ALIAS
from tether.schemas.log_fields import default_mapping, severity_name

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_SPANS = 5_000
MAX_LOGS = 5_000
_PAGE = 1_000
# Sort by time in nanoseconds whatever the mapping (date or date_nanos), so sort values are ints
# that compare and round-trip exactly.
_BY_TIME_ASC = [{"@timestamp": {"order": "asc", "numeric_type": "date_nanos"}}]
_BY_TIME_DESC = [{"@timestamp": {"order": "desc", "numeric_type": "date_nanos"}}]
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Unavailable(Exception):
    """Elasticsearch could not be reached, or refused the query."""


class BadArgument(ValueError):
    """An argument the user can fix (exit status 2)."""


def normalize_trace_id(text: str) -> str:
    trace_id = text.strip().lower()
    if not TRACE_ID.match(trace_id) or trace_id == "0" * 32:
        raise BadArgument(f"invalid trace id {text!r}: expected 32 hex digits (16 bytes), not all zero")
    return trace_id


def parse_since(text: str, now_ns: int | None = None) -> int:
    """A start time in nanoseconds from a duration back from now (15m, 2h, 1d, 30s, 1w) or an
    ISO 8601 time (UTC unless it says otherwise; a date alone is its midnight)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    match = _DURATION.match(text.strip().lower())
    if match:
        return now_ns - int(float(match.group(1)) * _UNIT_SECONDS[match.group(2)] * 1_000_000_000)
    try:
        return parse_ns(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadArgument(
            f"invalid --since {text!r}: use a duration (30s, 15m, 2h, 1d, 1w) or an ISO time "
            "(2024-05-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:  # times are shown in UTC, so they are read in UTC too
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000_000)


@dataclass(slots=True)
class LogQuery:
    services: list[str] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)
    since_ns: int | None = None
    trace_id: str | None = None
    text: str | None = None

    def filters(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.services:
            out.append({"terms": {"service.name": self.services}})
        if self.levels:
            # The collector writes the short name of a known level ("warning", "WRN", 40 are
            # all "warn") and other levels lower-cased: accept any of those here.
            out.append({"terms": {"log.level": sorted({_indexed_level(level) for level in self.levels})}})
        if self.trace_id:
            out.append({"term": {"trace.id": self.trace_id}})
        if self.since_ns is not None:
            out.append({"range": {"@timestamp": {"gte": iso(self.since_ns)}}})
        return out

    def query(self, from_ns: int | None = None) -> dict[str, Any]:
        filters = self.filters()
        if from_ns is not None:
            filters.append({"range": {"@timestamp": {"gte": iso(from_ns)}}})
        must: list[dict[str, Any]] = []
        if self.text:
            # simple_query_string never fails on user syntax: "a -b", "\"exact phrase\"", "time*".
            must.append(
                {
                    "simple_query_string": {
                        "query": self.text,
                        "fields": ["message"],
                        "default_operator": "and",
                    }
                }
            )
        return {"bool": {"filter": filters, "must": must}}


class Reader:
    """Async reads from one Elasticsearch. Use as `async with Reader(url) as reader:`."""

    def __init__(self, url: str | ElasticsearchConnection = DEFAULT_URL, timeout: float = 10.0) -> None:
        self.connection = (
            url if isinstance(url, ElasticsearchConnection) else ElasticsearchConnection(url=url)
        )
        self.url = self.connection.address
        # One retry at most: an unreachable server should be reported in seconds, not minutes.
        self._es = AsyncElasticsearch(
            **self.connection.client_kwargs(), request_timeout=timeout, max_retries=1, retry_on_timeout=False
        )

    async def __aenter__(self) -> Reader:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._es.close()

    @contextlib.contextmanager
    def _answers(self) -> Iterator[None]:
        """Client errors as `Unavailable`, with the URL and the reason on one line."""
        try:
            yield
        except (ApiError, TransportError) as error:
            # TLS and credential refusals name the setting to fix (ELASTICSEARCH_* or the file's key).
            problem = explain(error, self.connection, "elasticsearch")
            if problem is None and isinstance(error, (TransportConnectionError, ConnectionTimeout)):
                problem = f"cannot reach Elasticsearch at {self.url} ({_reason(error)})"
            raise Unavailable(problem or f"Elasticsearch at {self.url}: {_describe(error)}") from error

    async def _search(self, index: str, **body: Any) -> dict[str, Any]:
        try:
            with self._answers():
                response = await self._es.search(index=index, ignore_unavailable=True, **body)
        except Unavailable as error:  # an alias removed between requests is still "no data"
            cause = error.__cause__
            if isinstance(cause, NotFoundError) and _error_type(cause) == "index_not_found_exception":
                return {"hits": {"hits": [], "total": {"value": 0}}}
            raise
        return dict(response.body)

    async def trace(self, trace_id: str, max_spans: int = MAX_SPANS, max_logs: int = MAX_LOGS) -> TraceView:
        term = {"term": {"trace.id": trace_id}}
        summaries, spans, logs = await asyncio.gather(
            self._search(TRACES_ALIAS, query=term, size=10),
            self._search(SPANS_ALIAS, query=term, sort=_BY_TIME_ASC, size=max_spans, track_total_hits=True),
            self._search(LOGS_ALIAS, query=term, sort=_BY_TIME_ASC, size=max_logs, track_total_hits=True),
        )
        notes: list[str] = []
        for name, response, limit in (("spans", spans, max_spans), ("logs", logs, max_logs)):
            total = int(response["hits"]["total"]["value"])
            if total > limit:
                notes.append(f"showing the first {limit} of {total} {name} (by start time)")
        # A trace re-emitted after a late span may have a summary in more than one daily index:
        # the one that saw the most spans is the latest.
        summary_hits = sorted(
            summaries["hits"]["hits"],
            key=lambda hit: int(hit["_source"].get("trace", {}).get("span_count", 0)),
            reverse=True,
        )
        summary = Summary.from_hit(summary_hits[0]) if summary_hits else None
        return build_trace(
            trace_id,
            summary,
            [SpanNode.from_hit(hit) for hit in spans["hits"]["hits"]],
            [LogLine.from_hit(hit) for hit in logs["hits"]["hits"]],
            notes,
        )

    async def logs(self, query: LogQuery, limit: int = 100) -> list[LogLine]:
        """The newest `limit` matching logs, oldest first."""
        response = await self._search(LOGS_ALIAS, query=query.query(), sort=_BY_TIME_DESC, size=limit)
        return [LogLine.from_hit(hit) for hit in reversed(response["hits"]["hits"])]

    async def _scan(self, query: dict[str, Any]) -> AsyncIterator[LogLine]:
        """Every matching log oldest first, paged with search_after. `_id` cannot be sorted on in
        Elasticsearch 8 (no fielddata), so the tiebreaker is a point in time's `_shard_doc`."""
        try:
            with self._answers():
                pit = await self._es.open_point_in_time(
                    index=LOGS_ALIAS, keep_alive="1m", ignore_unavailable=True
                )
        except Unavailable as error:
            if isinstance(error.__cause__, NotFoundError):
                return  # no logs index yet
            raise
        pit_id = str(pit["id"])
        try:
            after: list[Any] | None = None
            while True:
                body: dict[str, Any] = {
                    "query": query,
                    "sort": _BY_TIME_ASC,
                    "size": _PAGE,
                    "pit": {"id": pit_id, "keep_alive": "1m"},
                }
                if after is not None:
                    body["search_after"] = after
                with self._answers():
                    response = await self._es.search(**body)
                hits = response["hits"]["hits"]
                for hit in hits:
                    yield LogLine.from_hit(hit)
                if len(hits) < _PAGE:
                    return
                after = hits[-1]["sort"]
                pit_id = str(response.get("pit_id", pit_id))
        finally:
            with contextlib.suppress(ApiError, TransportError):  # else it expires by itself
                await self._es.close_point_in_time(id=pit_id)

    async def follow(
        self,
        query: LogQuery,
        limit: int = 100,
        interval: float = 1.0,
        lookback: float = 60.0,
    ) -> AsyncIterator[LogLine]:
        """The newest `limit` logs, then every log indexed afterwards, polling every `interval` s.

        Logs are polled by their own time, and the collector indexes a log only after its trace's
        correlation window, so a log can arrive with a time older than logs already shown: each
        poll looks `lookback` seconds behind the newest time seen and skips the ids it has shown.
        """
        lookback_ns = int(lookback * 1_000_000_000)
        newest = time.time_ns()
        seen: dict[str, int] = {}
        # What is already there is not "new": remember the ids inside the window first.
        async for line in self._scan(query.query(from_ns=newest - lookback_ns)):
            seen[line.doc_id] = line.timestamp_ns
        for line in await self.logs(query, limit):
            seen[line.doc_id] = line.timestamp_ns
            newest = max(newest, line.timestamp_ns)
            yield line
        while True:
            await asyncio.sleep(interval)
            floor = newest - lookback_ns
            async for line in self._scan(query.query(from_ns=floor)):
                if line.doc_id in seen:
                    continue
                seen[line.doc_id] = line.timestamp_ns
                newest = max(newest, line.timestamp_ns)
                yield line
            floor = newest - lookback_ns
            for doc_id in [k for k, ts in seen.items() if ts < floor]:
                del seen[doc_id]


def _error_type(error: ApiError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    return str(body.get("error", {}).get("type", "")) if isinstance(body.get("error"), dict) else ""


def _describe(error: Exception) -> str:
    if isinstance(error, ApiError):
        body = error.body if isinstance(error.body, dict) else {}
        detail = body.get("error", {})
        reason = detail.get("reason", "") if isinstance(detail, dict) else str(detail)
        return f"HTTP {error.meta.status} {_error_type(error) or error.message}: {reason}".rstrip(": ")
    return _reason(error)


def _reason(error: Exception) -> str:
    text = str(getattr(error, "message", "") or error)
    if "connect call failed" in text.lower():  # aiohttp's words for a refused connection
        return "connection refused"
    for known in ("Connection refused", "timed out", "Name or service not known", "No route to host"):
        if known.lower() in text.lower():
            return known.lower()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _indexed_level(level: str) -> str:
    """log.level as the collector indexes a level written this way (collector.documents)."""
    return severity_name(default_mapping().severity_number(level)) or level.lower()
