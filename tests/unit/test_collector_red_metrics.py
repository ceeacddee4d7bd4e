"""collector.red_metrics: requests, errors and durations per service and operation, read back from
the registry; span documents built by span_documents from real OTLP requests."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from prometheus_client import CollectorRegistry, generate_latest

from tether.collector.documents import SpanDoc, span_documents
from tether.collector.red_metrics import (
    DEFAULT_DURATION_BUCKETS_MS,
    OVERFLOW,
    UNKNOWN_SERVICE,
    RedMetrics,
    RedMetricsConfig,
)
from tether.config import ConfigError, Section, parse_config

T0 = 1_704_164_645_000_000_000
STATUS = {"OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR, "UNSET": Status.STATUS_CODE_UNSET}
_ids = itertools.count(1)


@dataclass(frozen=True)
class Sent:
    service: str | None
    operation: str
    status: str = "OK"
    duration_us: int = 1000


def span_docs(*sent: Sent) -> list[SpanDoc]:
    """The documents of one OTLP request holding these spans, one resource per span."""
    request = ExportTraceServiceRequest()
    for item in sent:
        attributes = [KeyValue(key="host.name", value=AnyValue(string_value="h1"))]
        if item.service is not None:
            attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=item.service)))
        span = Span(
            trace_id=next(_ids).to_bytes(16, "big"),
            span_id=next(_ids).to_bytes(8, "big"),
            name=item.operation,
            start_time_unix_nano=T0,
            end_time_unix_nano=T0 + item.duration_us * 1000,
            status=Status(code=STATUS[item.status]),
        )
        request.resource_spans.append(
            ResourceSpans(resource=Resource(attributes=attributes), scope_spans=[ScopeSpans(spans=[span])])
        )
    return span_documents(request)


def red(**config: object) -> tuple[RedMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return RedMetrics(registry, RedMetricsConfig.model_validate(config)), registry


def value(registry: CollectorRegistry, name: str, service: str, operation: str, **extra: str) -> float | None:
    return registry.get_sample_value(name, {"service": service, "operation": operation, **extra})


def test_requests_and_errors_match_the_spans_given_per_service_and_operation() -> None:
    sent = [
        Sent(service, operation, status)
        for service, operation, status, repeat in [
            ("checkout", "GET /cart", "OK", 3),
            ("checkout", "GET /cart", "ERROR", 2),
            ("checkout", "POST /pay", "UNSET", 4),
            ("payments", "GET /cart", "ERROR", 1),
            ("payments", "charge", "OK", 5),
        ]
        for _ in range(repeat)
    ]
    metrics, registry = red()
    metrics.observe(span_docs(*sent[:7]))  # two calls add up
    metrics.observe(span_docs(*sent[7:]))

    requests = Counter((s.service, s.operation) for s in sent)
    errors = Counter((s.service, s.operation) for s in sent if s.status == "ERROR")
    assert len(requests) == 4
    for (service, operation), count in requests.items():
        assert service is not None
        assert value(registry, "tether_collector_span_requests_total", service, operation) == count
        assert (
            value(registry, "tether_collector_span_errors_total", service, operation)
            == errors[(service, operation)]
        )
        assert value(registry, "tether_collector_span_duration_seconds_count", service, operation) == count
    assert registry.get_sample_value("tether_collector_span_metrics_overflow_total") == 0


def test_the_histogram_buckets_each_duration_at_or_below_its_bound() -> None:
    durations_us = [999, 1000, 1001, 10_000, 10_001, 2_000_000]
    metrics, registry = red(duration_buckets_ms=[1, 10])
    metrics.observe(span_docs(*(Sent("api", "op", duration_us=d) for d in durations_us)))

    def bucket(le: str) -> float | None:
        return value(registry, "tether_collector_span_duration_seconds_bucket", "api", "op", le=le)

    # le is inclusive, in seconds: 1 ms is 0.001 s.
    assert bucket("0.001") == sum(1 for d in durations_us if d <= 1000)
    assert bucket("0.01") == sum(1 for d in durations_us if d <= 10_000)
    assert bucket("+Inf") == len(durations_us)
    assert bucket("0.1") is None  # only the configured bounds
    total = value(registry, "tether_collector_span_duration_seconds_sum", "api", "op")
    assert total == pytest.approx(sum(durations_us) / 1e6)


def test_the_default_buckets_are_exposed_in_seconds() -> None:
    metrics, registry = red()
    metrics.observe(span_docs(Sent("api", "op", duration_us=3_000)))
    for bound_ms in DEFAULT_DURATION_BUCKETS_MS:
        bucket = value(
            registry, "tether_collector_span_duration_seconds_bucket", "api", "op", le=str(bound_ms / 1000)
        )
        assert bucket == (1 if bound_ms * 1000 >= 3_000 else 0)


def test_a_span_without_service_name_counts_as_unknown_service() -> None:
    metrics, registry = red()
    metrics.observe(span_docs(Sent(None, "orphan", "ERROR"), Sent(None, "orphan")))
    assert value(registry, "tether_collector_span_requests_total", UNKNOWN_SERVICE, "orphan") == 2
    assert value(registry, "tether_collector_span_errors_total", UNKNOWN_SERVICE, "orphan") == 1


def test_pairs_beyond_max_series_share_the_overflow_series_and_are_counted() -> None:
    metrics, registry = red(max_series=2)
    metrics.observe(span_docs(Sent("a", "x"), Sent("a", "y")))
    late = [Sent("b", "x", "ERROR", 5_000), Sent("c", "z", "OK", 7_000), Sent("b", "x", "OK", 1_000)]
    # Admitted pairs keep counting in their own series after the cap is reached.
    metrics.observe(span_docs(late[0], Sent("a", "x"), late[1], Sent("a", "y", "ERROR"), late[2]))

    assert value(registry, "tether_collector_span_requests_total", "a", "x") == 2
    assert value(registry, "tether_collector_span_requests_total", "a", "y") == 2
    assert value(registry, "tether_collector_span_errors_total", "a", "y") == 1
    for service, operation in [("b", "x"), ("c", "z")]:
        assert value(registry, "tether_collector_span_requests_total", service, operation) is None
    over = (OVERFLOW, OVERFLOW)
    assert value(registry, "tether_collector_span_requests_total", *over) == len(late)
    assert value(registry, "tether_collector_span_errors_total", *over) == sum(
        1 for s in late if s.status == "ERROR"
    )
    assert value(registry, "tether_collector_span_duration_seconds_sum", *over) == pytest.approx(
        sum(s.duration_us for s in late) / 1e6
    )
    assert registry.get_sample_value("tether_collector_span_metrics_overflow_total") == len(late)
    series = {
        (s.labels["service"], s.labels["operation"])
        for family in registry.collect()
        if family.name == "tether_collector_span_requests"
        for s in family.samples
    }
    assert series == {("a", "x"), ("a", "y"), over}  # max_series pairs plus the overflow series


def test_the_families_are_exposed_before_any_span_and_not_when_disabled() -> None:
    _, registry = red()
    text = generate_latest(registry).decode()
    for line in [
        "# TYPE tether_collector_span_requests_total counter",
        "# TYPE tether_collector_span_errors_total counter",
        "# TYPE tether_collector_span_duration_seconds histogram",
        "# TYPE tether_collector_span_metrics_overflow_total counter",
    ]:
        assert line in text

    metrics, registry = red(enabled=False)
    metrics.observe(span_docs(Sent("a", "x")))
    assert "tether_collector_span" not in generate_latest(registry).decode()


def test_a_second_instance_on_the_same_registry_is_refused() -> None:
    metrics, registry = red()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        RedMetrics(registry, RedMetricsConfig())
    metrics.observe(span_docs(Sent("a", "x")))
    assert value(registry, "tether_collector_span_requests_total", "a", "x") == 1


class _Collector(Section):
    red_metrics: RedMetricsConfig = RedMetricsConfig()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("red_metrics: {duration_buckets_ms: [5, 5, 10]}", "duration_buckets_ms: Value error, the bounds"),
        ("red_metrics: {duration_buckets_ms: [10, 5]}", "duration_buckets_ms: Value error, the bounds"),
        ("red_metrics: {duration_buckets_ms: [0, 5]}", "duration_buckets_ms: Value error, every bound"),
        ("red_metrics: {duration_buckets_ms: [-1, 5]}", "duration_buckets_ms: Value error, every bound"),
        ("red_metrics: {duration_buckets_ms: [1, .inf]}", "duration_buckets_ms: Value error, every bound"),
        ("red_metrics: {duration_buckets_ms: [1, .nan]}", "duration_buckets_ms: Value error, every bound"),
        ("red_metrics: {duration_buckets_ms: []}", "duration_buckets_ms: Tuple should have at least 1"),
        ("red_metrics: {duration_buckets_ms: [1, fast]}", "duration_buckets_ms.1: Input should be a valid"),
        ("red_metrics: {max_series: 0}", "max_series: Input should be greater than or equal to 1"),
        ("red_metrics: {max_serie: 10}", "max_serie: unknown key"),
    ],
)
def test_config_errors_name_the_key(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(text, _Collector)
    assert f"red_metrics.{problem}" in str(error.value)


def test_config_defaults_and_a_valid_list() -> None:
    config = parse_config("red_metrics: {duration_buckets_ms: [0.5, 2, 30000]}", _Collector).red_metrics
    assert config.duration_buckets_ms == (0.5, 2, 30000)
    assert (config.enabled, config.max_series) == (True, 1000)
    defaults = RedMetricsConfig().duration_buckets_ms
    assert list(defaults) == sorted(set(defaults)) and defaults[0] > 0
