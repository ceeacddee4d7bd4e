"""Trace-aware tail sampling: keep or drop a whole trace, with its logs, when its window ends.

Policies run in a fixed order and the first that matches keeps the trace: an error span, an error
or fatal log line, a span slower than its latency threshold; the rest is sampled by probability
(per root service) and, where configured, limited to a rate per root service. The decision depends
on the trace's content and id only, never on the collector or the wall clock, so any collector
decides the same, and so does one that restarts and replays (docs/sampling.md says what a replay
can still change: the rate limiter's state, and traces whose records straddle the committed offset).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import prometheus_client
from prometheus_client import CollectorRegistry
from pydantic import Field, field_validator, model_validator

from tether.config import Section

# The policies, in the order they run; a kept document records the one that kept it.
ERROR_SPAN = "error_span"
ERROR_LOG = "error_log"
LATENCY = "latency"
PROBABILITY = "probability"
RATE = "rate"
# Kept without a decision of its own: a late item whose trace the collector does not remember.
UNKNOWN_TRACE = "unknown_trace"

_HASH_SPACE = 1 << 64
# Part of the hash: changing it changes every probability decision, on every collector at once.
_HASH_PERSON = b"tether-sampling"
# Root services with a rate bucket of their own, per partition; more share one bucket.
MAX_RATE_BUCKETS = 10_000
OVERFLOW_SERVICE = "_overflow"
UNKNOWN_SERVICE = "unknown"  # the label of traces without a known root service (""), as elsewhere


class SpanFacts(Protocol):
    """What sampling reads of a span: collector TraceSummary's SpanInfo."""

    @property
    def name(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def duration_us(self) -> int: ...


class TraceFacts(Protocol):
    """What sampling reads of a trace: the collector's TraceSummary (a protocol, so that this module
    does not depend on where the summary lives nor on the rest of it)."""

    @property
    def trace_id(self) -> str: ...
    @property
    def error_count(self) -> int: ...  # spans of status ERROR
    @property
    def logs_by_level(self) -> Counter[str]: ...  # short level names: "error", "fatal", ...
    @property
    def spans(self) -> Mapping[str, SpanFacts]: ...
    def root(self) -> SpanFacts | None: ...


class LatencyRule(Section):
    service: str = Field(description="the service whose spans are timed")
    operation: str | None = Field(default=None, description="one operation (span name); all when absent")
    threshold_ms: float = Field(description="a span that lasted longer keeps its trace")

    @field_validator("service")
    @classmethod
    def _service_named(cls, service: str) -> str:
        if not service:
            raise ValueError("empty (name a service, or use sampling.latency_default_ms for any service)")
        return service

    @field_validator("operation")
    @classmethod
    def _operation_named(cls, operation: str | None) -> str | None:
        if operation == "":
            raise ValueError("empty (name a span, or leave the key out to time every operation)")
        return operation

    @field_validator("threshold_ms")
    @classmethod
    def _threshold_positive(cls, threshold_ms: float) -> float:
        return _positive_ms(threshold_ms)


class SamplingConfig(Section):
    """What to keep of the traces whose window ended. Off by default: everything is kept."""

    enabled: bool = Field(default=False, description="off: every trace is kept and nothing is counted")
    keep_error_spans: bool = Field(default=True, description="keep traces with a span of status ERROR")
    keep_error_logs: bool = Field(default=True, description="keep traces with a log line at error or fatal")
    latency: list[LatencyRule] = Field(
        default_factory=list, description="keep traces with a span slower than its service's threshold"
    )
    latency_default_ms: float | None = Field(
        default=None, description="the threshold of spans no `latency` rule names (none when absent)"
    )
    probability: float = Field(
        default=0.1,
        description="share of the other traces kept (0-1); 1 when absent and a rate is set, else 0.1",
    )
    probability_by_service: dict[str, float] = Field(
        default_factory=dict, description="the probability of traces by root service"
    )
    rate_per_service: float | None = Field(
        default=None, description="at most this many of the other traces per second per root service"
    )
    rate_by_service: dict[str, float] = Field(
        default_factory=dict, description="the rate limit of traces by root service"
    )

    @model_validator(mode="before")
    @classmethod
    def _rate_alone_keeps_up_to_the_rate(cls, data: Any) -> Any:
        # A rate configured without a probability limits the rest on its own: a default
        # probability of 0.1 under it would surprise.
        rated = isinstance(data, dict) and (
            data.get("rate_per_service") is not None or data.get("rate_by_service")
        )
        if rated and "probability" not in data:
            return {**data, "probability": 1.0}
        return data

    @field_validator("latency_default_ms")
    @classmethod
    def _default_threshold_positive(cls, threshold_ms: float | None) -> float | None:
        return None if threshold_ms is None else _positive_ms(threshold_ms)

    @field_validator("latency")
    @classmethod
    def _one_threshold_each(cls, rules: list[LatencyRule]) -> list[LatencyRule]:
        seen: dict[tuple[str, str | None], int] = {}
        for index, rule in enumerate(rules):
            key = (rule.service, rule.operation)
            if key in seen:
                what = f"service {rule.service!r}" + (
                    f" operation {rule.operation!r}" if rule.operation else ""
                )
                raise ValueError(f"entry {index} repeats entry {seen[key]} ({what}): keep one threshold")
            seen[key] = index
        return rules

    @field_validator("probability")
    @classmethod
    def _probability_range(cls, probability: float) -> float:
        return _probability(probability)

    @field_validator("probability_by_service")
    @classmethod
    def _probabilities_range(cls, by_service: dict[str, float]) -> dict[str, float]:
        for service, probability in by_service.items():
            _service_key(service, "probability")
            _probability(probability, service)
        return by_service

    @field_validator("rate_per_service")
    @classmethod
    def _rate_range(cls, rate: float | None) -> float | None:
        return None if rate is None else _rate(rate)

    @field_validator("rate_by_service")
    @classmethod
    def _rates_range(cls, by_service: dict[str, float]) -> dict[str, float]:
        for service, rate in by_service.items():
            _service_key(service, "rate_per_service")
            _rate(rate, service)
        return by_service


def _positive_ms(threshold_ms: float) -> float:
    if not threshold_ms > 0:
        raise ValueError("must be more than 0 milliseconds (e.g. 500 for half a second)")
    return threshold_ms


def _probability(probability: float, service: str = "") -> float:
    if not 0 <= probability <= 1:
        where = f"{service}: " if service else ""
        raise ValueError(f"{where}must be between 0 and 1 (e.g. 0.1 keeps one trace in ten; 1 keeps all)")
    return probability


def _rate(rate: float, service: str = "") -> float:
    if not 0 <= rate < float("inf"):
        where = f"{service}: " if service else ""
        raise ValueError(f"{where}must be 0 or more traces per second (e.g. 10; 0.5 is one every 2 s)")
    return rate


def _service_key(service: str, default_key: str) -> None:
    if not service:
        raise ValueError(
            f"an empty service name (traces without a root service follow sampling.{default_key})"
        )


@dataclass(frozen=True, slots=True)
class Decision:
    keep: bool
    policy: str  # the policy that kept the trace, or the one that dropped it ("" with sampling off)
    service: str  # the trace's root service, "" when unknown


def trace_hash(trace_id: str) -> int:
    """A uniform 64-bit number of a trace id, the same on every collector and after a restart.

    The id is hashed rather than read as a number: W3C asks for random ids, but not every source
    makes them (sequential or time-prefixed ids from older SDKs, tests and log-only services), and
    sampling the low bits of such ids keeps whole runs of neighbours or none of them."""
    digest = hashlib.blake2b(trace_id.lower().encode(), digest_size=8, person=_HASH_PERSON).digest()
    return int.from_bytes(digest, "big")


def _bound(probability: float) -> int:
    """Kept when trace_hash() < bound: a trace kept at one probability is kept at any higher one."""
    return _HASH_SPACE if probability >= 1 else int(probability * _HASH_SPACE)


@dataclass(slots=True)
class _TokenBucket:
    """Traces per second, refilled by event time: the same input in the same order decides the same."""

    rate: float
    capacity: float
    tokens: float
    last_ns: int

    @classmethod
    def full(cls, rate: float, now_ns: int) -> _TokenBucket:
        # A second's worth may pass at once, and at least one trace when the rate is not 0.
        capacity = max(rate, 1.0) if rate > 0 else 0.0
        return cls(rate, capacity, capacity, now_ns)

    def take(self, now_ns: int) -> bool:
        if now_ns > self.last_ns:  # event time never runs back: an earlier trace refills nothing
            self.tokens = min(self.capacity, self.tokens + (now_ns - self.last_ns) * self.rate / 1e9)
            self.last_ns = now_ns
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Sampler:
    """The sampling decision of one partition's traces (one Sampler per TraceBuffer).

    Only the rate limiter has state, and it is the partition's own: the configured rate is per
    partition, not per collector nor per cluster."""

    def __init__(self, config: SamplingConfig) -> None:
        self.enabled = config.enabled
        self._keep_error_spans = config.keep_error_spans
        self._keep_error_logs = config.keep_error_logs
        # thresholds in microseconds, like SpanInfo.duration_us
        self._by_operation: dict[str, dict[str, float]] = {}
        self._by_service: dict[str, float] = {}
        for rule in config.latency:
            if rule.operation is None:
                self._by_service[rule.service] = rule.threshold_ms * 1000
            else:
                self._by_operation.setdefault(rule.service, {})[rule.operation] = rule.threshold_ms * 1000
        default_ms = config.latency_default_ms
        self._default_us = None if default_ms is None else default_ms * 1000
        self._timed = bool(config.latency) or default_ms is not None
        self._default_bound = _bound(config.probability)
        self._bounds = {service: _bound(p) for service, p in config.probability_by_service.items()}
        self._default_rate = config.rate_per_service
        self._rates = dict(config.rate_by_service)
        self._buckets: dict[str, _TokenBucket] = {}

    def decide(self, summary: TraceFacts, event_time_ns: int) -> Decision:
        """Keep or drop the trace whose window ended. `event_time_ns` advances the rate limiter: give
        the trace's time in the partition's event time (e.g. the Kafka timestamp of its first record)."""
        root = summary.root()
        service = root.service if root is not None else ""
        if not self.enabled:
            return Decision(True, "", service)
        if self._keep_error_spans and summary.error_count:
            return Decision(True, ERROR_SPAN, service)
        if self._keep_error_logs:
            levels = summary.logs_by_level
            # short level names; a Counter: a missing level reads 0 and is not added
            if levels["error"] or levels["fatal"]:
                return Decision(True, ERROR_LOG, service)
        if self._timed and self._slow(summary):
            return Decision(True, LATENCY, service)
        return self._sample(summary.trace_id, service, event_time_ns)

    def _slow(self, summary: TraceFacts) -> bool:
        by_operation, by_service, default = self._by_operation, self._by_service, self._default_us
        for span in summary.spans.values():
            operations = by_operation.get(span.service)
            threshold = operations.get(span.name) if operations else None
            if threshold is None:
                threshold = by_service.get(span.service, default)
            if threshold is not None and span.duration_us > threshold:
                return True
        return False

    def _sample(self, trace_id: str, service: str, event_time_ns: int) -> Decision:
        bound = self._bounds.get(service, self._default_bound)
        if bound < _HASH_SPACE and trace_hash(trace_id) >= bound:
            return Decision(False, PROBABILITY, service)
        rate = self._rates.get(service, self._default_rate)
        if rate is None:
            return Decision(True, PROBABILITY, service)
        return Decision(self._bucket(service, rate, event_time_ns).take(event_time_ns), RATE, service)

    def _bucket(self, service: str, rate: float, now_ns: int) -> _TokenBucket:
        bucket = self._buckets.get(service)
        if bucket is None:
            if len(self._buckets) >= MAX_RATE_BUCKETS and service not in self._rates:
                service = OVERFLOW_SERVICE  # bounded memory; such services share one limit
                bucket = self._buckets.get(service)
            if bucket is None:
                bucket = self._buckets[service] = _TokenBucket.full(rate, now_ns)
        return bucket


Kind = Literal["spans", "logs"]


class SamplingCounts:
    """tether_collector_sampled_{traces,items}_total by decision (keep, drop), policy and root
    service; at most `max_services` service labels, the others counted as service="_overflow"."""

    def __init__(self, registry: CollectorRegistry, max_services: int = 200) -> None:
        labels = ["decision", "policy", "service"]
        self._traces = prometheus_client.Counter(
            "tether_collector_sampled_traces",
            "Traces kept or dropped by tail sampling, by the policy that decided and the root service",
            labels,
            registry=registry,
        )
        self._items = prometheus_client.Counter(
            "tether_collector_sampled_items",
            "Spans and log lines kept or dropped with their trace (late ones with its remembered decision)",
            [*labels, "kind"],
            registry=registry,
        )
        self._max_services = max_services
        self._services: set[str] = set()
        self._children: dict[tuple[bool, str, str], tuple[Any, Any, Any]] = {}

    def count_trace(self, decision: Decision, spans: int, logs: int) -> None:
        traces, span_items, log_items = self._series(decision)
        traces.inc()
        if spans:
            span_items.inc(spans)
        if logs:
            log_items.inc(logs)

    def count_items(self, decision: Decision, kind: Kind, count: int = 1) -> None:
        """Items that follow a decision already counted: late spans and logs of a remembered trace."""
        _, span_items, log_items = self._series(decision)
        (span_items if kind == "spans" else log_items).inc(count)

    def _series(self, decision: Decision) -> tuple[Any, Any, Any]:
        service = self._label(decision.service)  # before the cache: it holds labels, not services
        key = (decision.keep, decision.policy, service)
        children = self._children.get(key)
        if children is None:
            labels = ("keep" if decision.keep else "drop", decision.policy, service)
            children = self._children[key] = (
                self._traces.labels(*labels),
                self._items.labels(*labels, "spans"),
                self._items.labels(*labels, "logs"),
            )
        return children

    def _label(self, service: str) -> str:
        if not service:
            return UNKNOWN_SERVICE
        if service in self._services:
            return service
        if len(self._services) < self._max_services:
            self._services.add(service)
            return service
        return OVERFLOW_SERVICE
