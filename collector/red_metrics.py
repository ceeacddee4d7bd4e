"""RED metrics from spans: requests, errors and a duration histogram per service and operation.

Counted when a spans record is decoded, before correlation or sampling, so they stay exact whatever
is kept. The series (service, operation pairs) are capped: a pair first seen once `max_series` pairs
exist is counted in the one overflow series (service and operation "_overflow"), like the
OpenTelemetry spanmetrics connector's cardinality limit, and its spans in
tether_collector_span_metrics_overflow_total. A pair, once admitted, is kept for the process's life.

Labels: service is the span's resource `service.name`, UNKNOWN_SERVICE when the resource has none
(the OpenTelemetry SDKs' own default name); operation is the span name as sent (may be "").

Per span this is a dict lookup, a bisect and a few integer additions: the counts live in plain
Python objects exposed by a custom collector at scrape time, because prometheus_client's
Counter/Histogram children take a lock per increment and walk the buckets (1.8 µs a span against
0.4 µs measured). Not thread-safe: the collector counts and serves /metrics on one event loop.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import accumulate, pairwise

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from pydantic import Field, field_validator

from tether.collector.documents import SpanDoc
from tether.config import Section

UNKNOWN_SERVICE = "unknown_service"
OVERFLOW = "_overflow"
OVERFLOW_PAIR = (OVERFLOW, OVERFLOW)

PREFIX = "tether_collector_span_"
REQUESTS = f"{PREFIX}requests"
ERRORS = f"{PREFIX}errors"
DURATION = f"{PREFIX}duration_seconds"
OVERFLOWED = f"{PREFIX}metrics_overflow"

# From 1 ms (a cache hit) to a minute (a batch job's span); +Inf is always added.
DEFAULT_DURATION_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


class RedMetricsConfig(Section):
    enabled: bool = Field(default=True, description="count requests, errors and durations of spans")
    max_series: int = Field(
        default=1000,
        ge=1,
        description="distinct (service, operation) pairs; spans of further pairs go to one overflow series",
    )
    duration_buckets_ms: tuple[float, ...] = Field(
        default=DEFAULT_DURATION_BUCKETS_MS,
        min_length=1,
        description="upper bounds of the duration histogram in milliseconds (+Inf is added)",
    )

    @field_validator("duration_buckets_ms")
    @classmethod
    def _increasing_and_positive(cls, bounds: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0 < bound < math.inf for bound in bounds):  # NaN fails too
            raise ValueError("every bound must be a positive, finite number of milliseconds")
        if any(later <= earlier for earlier, later in pairwise(bounds)):
            raise ValueError("the bounds must be strictly increasing")
        return bounds


class _Series:
    """One pair's counts; requests is the sum of the buckets, so it cannot disagree with them."""

    __slots__ = ("buckets", "duration_us", "errors")

    def __init__(self, bucket_count: int) -> None:
        self.buckets = [0] * bucket_count  # non-cumulative; the last one is +Inf
        self.errors = 0
        self.duration_us = 0


class RedMetrics:
    def __init__(self, registry: CollectorRegistry, config: RedMetricsConfig) -> None:
        self._enabled = config.enabled
        self._max_series = config.max_series
        self._bounds_us = [bound * 1000 for bound in config.duration_buckets_ms]
        # `le` written as prometheus_client's own Histogram writes it (untyped in that library).
        seconds = [bound / 1000 for bound in config.duration_buckets_ms]
        self._le = [floatToGoString(bound) for bound in seconds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self._series: dict[tuple[str, str], _Series] = {}
        self._overflowed_spans = 0
        if self._enabled:
            registry.register(self)

    def observe(self, spans: Iterable[SpanDoc]) -> None:
        """Count each span under its (service, operation), or the overflow series once the cap is hit."""
        if not self._enabled:
            return
        series, bounds, where = self._series, self._bounds_us, bisect_left
        for doc in spans:
            span = doc.source["span"]
            pair = (doc.service or UNKNOWN_SERVICE, span["name"])
            counts = series.get(pair)
            if counts is None:
                counts = self._admit(pair)
            duration_us = span["duration"]["us"]
            counts.buckets[where(bounds, duration_us)] += 1
            counts.duration_us += duration_us
            if span["status"] == "ERROR":
                counts.errors += 1

    def _admit(self, pair: tuple[str, str]) -> _Series:
        """A new pair's series while there is room; else the overflow series, that span counted."""
        # The overflow series only exists once max_series pairs do: the length is then past the cap.
        if len(self._series) < self._max_series:
            counts = self._series[pair] = _Series(len(self._le))
            return counts
        self._overflowed_spans += 1
        overflow = self._series.get(OVERFLOW_PAIR)
        if overflow is None:
            overflow = self._series[OVERFLOW_PAIR] = _Series(len(self._le))
        return overflow

    def describe(self) -> Iterator[Metric]:
        """The families without samples: lets the registry refuse a name registered twice."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families(with_samples=True)

    def _families(self, *, with_samples: bool = False) -> Iterator[Metric]:
        labels = ["service", "operation"]
        requests = CounterMetricFamily(REQUESTS, "Spans received, by service and operation", labels=labels)
        errors = CounterMetricFamily(
            ERRORS, "Spans with status ERROR, by service and operation", labels=labels
        )
        durations = HistogramMetricFamily(DURATION, "Span duration, by service and operation", labels=labels)
        overflowed = CounterMetricFamily(
            OVERFLOWED,
            "Spans counted in the _overflow series: their (service, operation) came after "
            "red_metrics.max_series pairs",
        )
        if with_samples:
            for pair, counts in self._series.items():
                values = list(pair)
                cumulative = list(accumulate(counts.buckets))
                requests.add_metric(values, cumulative[-1])
                errors.add_metric(values, counts.errors)
                durations.add_metric(
                    values, list(zip(self._le, cumulative, strict=True)), counts.duration_us / 1e6
                )
            overflowed.add_metric([], self._overflowed_spans)
        yield from (requests, errors, durations, overflowed)
