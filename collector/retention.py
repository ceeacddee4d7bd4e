"""Retention: deleting daily indices older than `elasticsearch.retention_days` of their alias.

Each collector runs a pass at start and then once an hour. Passes are idempotent: any number of
collectors may run them at once, an index another one deleted first (404) is simply gone. Only
names of the exact daily form `<alias>-YYYY.MM.DD` (schemas/indices.py) of a configured alias are
ever deleted; anything else under the same prefix is left alone.

An index of day D holds documents stamped from D 00:00 to D+1 00:00 UTC, so it is deleted once
the newest document it can hold is older than the retention: at (D + 1 + days) 00:00 UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from elasticsearch import AsyncElasticsearch, NotFoundError
from pydantic import Field

from tether.collector.metrics import CollectorMetrics
from tether.config import Section
from tether.schemas.indices import DEADLETTER_ALIAS, LOGS_ALIAS, NS_PER_DAY, SPANS_ALIAS, TRACES_ALIAS

log = logging.getLogger("tether.collector.retention")

RETENTION_INTERVAL_SECONDS = 3600.0
_EPOCH = datetime.date(1970, 1, 1)


class RetentionDaysConfig(Section):
    """`elasticsearch.retention_days`: days per alias; an alias left out (the default) is kept forever."""

    logs: int | None = Field(default=None, ge=1, description="days tether-logs-* indices are kept")
    spans: int | None = Field(default=None, ge=1, description="days tether-spans-* indices are kept")
    traces: int | None = Field(default=None, ge=1, description="days tether-traces-* indices are kept")
    deadletter: int | None = Field(
        default=None, ge=1, description="days tether-deadletter-* indices are kept"
    )

    def by_alias(self) -> dict[str, int]:
        """The aliases that have a retention, with their days."""
        configured = {
            LOGS_ALIAS: self.logs,
            SPANS_ALIAS: self.spans,
            TRACES_ALIAS: self.traces,
            DEADLETTER_ALIAS: self.deadletter,
        }
        return {alias: days for alias, days in configured.items() if days is not None}


class IndexAdmin(Protocol):
    """What retention needs of Elasticsearch."""

    async def indices(self, pattern: str) -> list[str]:
        """Names of the concrete indices (open or closed) matching `pattern`."""
        ...

    async def delete(self, index: str) -> bool:
        """Delete one index by its exact name: False when it was already gone (404)."""
        ...


class ElasticsearchIndexAdmin:
    """IndexAdmin over the collector's Elasticsearch client."""

    def __init__(self, client: AsyncElasticsearch) -> None:
        self.client = client

    async def indices(self, pattern: str) -> list[str]:
        # resolve_index tells indices from aliases and data streams: only indices are candidates.
        resolved = await self.client.indices.resolve_index(name=pattern, expand_wildcards="all")
        return [str(entry["name"]) for entry in resolved.get("indices", [])]

    async def delete(self, index: str) -> bool:
        try:
            await self.client.indices.delete(index=index, expand_wildcards="none")
        except NotFoundError:
            return False
        return True


def daily_day(alias: str, index: str) -> datetime.date | None:
    """The day of `index` if it is exactly `<alias>-YYYY.MM.DD` (a real date, zero-padded)."""
    match = re.fullmatch(re.escape(alias) + r"-(\d{4})\.(\d{2})\.(\d{2})", index)
    if match is None:
        return None
    try:
        return datetime.date(*(int(part) for part in match.groups()))
    except ValueError:  # 2020.02.30 is not a day we would have written
        return None


def expired(alias: str, days: int, indices: list[str], now_ns: int) -> list[str]:
    """Those of `indices` that are daily indices of `alias` older than `days` at `now_ns`."""
    old = []
    for index in indices:
        day = daily_day(alias, index)
        if day is not None and ((day - _EPOCH).days + 1 + days) * NS_PER_DAY <= now_ns:
            old.append(index)
    return sorted(old)


class Retention:
    def __init__(
        self,
        days_by_alias: Mapping[str, int],
        admin: IndexAdmin,
        metrics: CollectorMetrics,
        *,
        clock: Callable[[], int] = time.time_ns,
        interval: float = RETENTION_INTERVAL_SECONDS,
    ) -> None:
        self.days_by_alias = dict(days_by_alias)
        self.admin = admin
        self.metrics = metrics
        self.clock = clock
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        """A pass now, then one per interval until `stop`; a failed pass waits for the next."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:  # a bug must not end retention for the life of the process
                self.metrics.retention_errors.inc()
                log.exception("retention pass failed")
            with contextlib.suppress(TimeoutError):  # the interval passed: time for the next pass
                await asyncio.wait_for(stop.wait(), self.interval)

    async def run_once(self) -> list[str]:
        """One pass over every alias with a retention; returns the indices this pass deleted."""
        deleted: list[str] = []
        now_ns = self.clock()
        for alias, days in self.days_by_alias.items():
            try:
                candidates = expired(alias, days, await self.admin.indices(f"{alias}-*"), now_ns)
            except Exception as error:  # Elasticsearch unreachable: the next pass tries again
                self._failed("listing indices for retention failed", alias, error)
                continue
            for index in candidates:
                try:
                    gone_now = await self.admin.delete(index)
                except Exception as error:
                    self._failed("deleting an index for retention failed", alias, error, index)
                    continue
                if gone_now:  # a 404 means another collector's pass deleted it: not ours to count
                    deleted.append(index)
                    self.metrics.retention_deleted.labels(alias).inc()
                    log.info(
                        "index deleted by retention",
                        extra={"index": index, "alias": alias, "retention_days": days},
                    )
        return deleted

    def _failed(self, what: str, alias: str, error: Exception, index: str | None = None) -> None:
        self.metrics.retention_errors.inc()
        log.warning(what, extra={"alias": alias, "index": index, "error": str(error)})
