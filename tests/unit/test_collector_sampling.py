"""collector.sampling: which traces tail sampling keeps, deterministically, and how it counts them."""

from __future__ import annotations

import functools
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from prometheus_client import CollectorRegistry

from tether.collector import sampling
from tether.collector.documents import LogDoc, SpanDoc, span_documents
from tether.collector.sampling import Decision, Sampler, SamplingConfig, SamplingCounts
from tether.collector.trace_summary import TraceSummary
from tether.config import ConfigError, Section, parse_config

T0 = 1_704_164_645_000_000_000
SECOND = 1_000_000_000
ROOT_SPAN = "00f067aa0ba902b7"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
# Only what a policy itself keeps: the rest is dropped (probability 0), so a kept trace shows it.
NOTHING_ELSE = {"enabled": True, "probability": 0.0}


class Root(Section):
    sampling: SamplingConfig


def config(**values: object) -> SamplingConfig:
    return SamplingConfig.model_validate({**NOTHING_ELSE, **values})


def span(
    trace_id: str,
    span_id: str = ROOT_SPAN,
    *,
    parent: str = "",
    service: str = "checkout",
    name: str = "GET /cart",
    error: bool = False,
    duration_ms: float = 1.0,
) -> SpanDoc:
    one = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent),
        name=name,
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + int(duration_ms * 1_000_000),
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK),
    )
    service_name = KeyValue(key="service.name", value=AnyValue(string_value=service))
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(resource=Resource(attributes=[service_name]), scope_spans=[ScopeSpans(spans=[one])])
        ]
    )
    [doc] = span_documents(request)
    return doc


def trace(trace_id: str = TRACE, *spans: SpanDoc, levels: tuple[str, ...] = ()) -> TraceSummary:
    """A summary built the way the trace buffer builds it, from span and log documents."""
    summary = TraceSummary(trace_id)
    for doc in spans or (span(trace_id),):
        summary.add_span(doc)
    for number, level in enumerate(levels):
        summary.add_log(LogDoc(f"log-{number}", T0, trace_id, "", {"tether": {}}, level))
    return summary


def random_trace_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


def rooted(trace_id: str, service: str = "checkout") -> TraceSummary:
    """A trace of one root span: the same span document in each (the summary reads no id from it)."""
    return trace(trace_id, root_span(service))


@functools.cache
def root_span(service: str) -> SpanDoc:
    return span(TRACE, service=service)


# --- the policies ---


def test_disabled_keeps_everything_whatever_the_policies() -> None:
    sampler = Sampler(SamplingConfig(probability=0.0))
    decisions = [sampler.decide(rooted(t), T0) for t in random_trace_ids(200, seed=1)]
    assert all(d.keep for d in decisions)
    assert {d.service for d in decisions} == {"checkout"}


def test_error_span_keeps_what_the_probability_drops() -> None:
    failing = trace(
        TRACE, span(TRACE, ROOT_SPAN), span(TRACE, "b7ad6b7169203331", parent=ROOT_SPAN, error=True)
    )
    assert Sampler(config()).decide(failing, T0) == Decision(True, "error_span", "checkout")
    assert Sampler(config()).decide(trace(TRACE), T0) == Decision(False, "probability", "checkout")
    assert Sampler(config(keep_error_spans=False)).decide(failing, T0) == Decision(
        False, "probability", "checkout"
    )


@pytest.mark.parametrize("level", ["error", "fatal"])
def test_error_and_fatal_logs_keep_their_trace(level: str) -> None:
    logged = trace(TRACE, levels=("info", level, "debug"))
    assert Sampler(config()).decide(logged, T0) == Decision(True, "error_log", "checkout")
    assert not Sampler(config(keep_error_logs=False)).decide(logged, T0).keep


def test_warnings_and_unknown_levels_keep_nothing() -> None:
    logged = trace(TRACE, levels=("warn", "unknown", "info", "trace"))
    assert Sampler(config()).decide(logged, T0) == Decision(False, "probability", "checkout")


def test_a_logs_only_trace_with_an_error_is_kept_without_a_service() -> None:
    summary = TraceSummary(TRACE)
    summary.add_log(LogDoc("log-1", T0, TRACE, "", {"tether": {}}, "error"))
    assert Sampler(config()).decide(summary, T0) == Decision(True, "error_log", "")


def test_latency_by_service_operation_and_default() -> None:
    rules = config(
        latency=[
            {"service": "payments", "threshold_ms": 500},
            {"service": "payments", "operation": "POST /refund", "threshold_ms": 5000},
        ],
        latency_default_ms=2000,
    )
    sampler = Sampler(rules)

    def slow(service: str, name: str, duration_ms: float) -> bool:
        child = span(
            TRACE, "b7ad6b7169203331", parent=ROOT_SPAN, service=service, name=name, duration_ms=duration_ms
        )
        return sampler.decide(trace(TRACE, span(TRACE, ROOT_SPAN), child), T0).keep

    assert slow("payments", "POST /pay", 501)
    assert not slow("payments", "POST /pay", 500)  # longer than the threshold, not as long
    assert not slow("payments", "POST /refund", 4000)  # the operation's own threshold wins
    assert slow("payments", "POST /refund", 5001)
    assert not slow("inventory", "GET /stock", 1999)  # the default for services no rule names
    assert slow("inventory", "GET /stock", 2001)
    assert sampler.decide(trace(TRACE, span(TRACE, ROOT_SPAN, duration_ms=2500)), T0) == Decision(
        True, "latency", "checkout"
    )


def test_without_a_default_only_named_services_are_timed() -> None:
    sampler = Sampler(config(latency=[{"service": "payments", "threshold_ms": 10}]))
    assert not sampler.decide(trace(TRACE, span(TRACE, ROOT_SPAN, duration_ms=60_000)), T0).keep


def test_policies_run_in_order_and_the_first_match_keeps() -> None:
    everything = trace(
        TRACE,
        span(TRACE, ROOT_SPAN, duration_ms=9000),
        span(TRACE, "b7ad6b7169203331", parent=ROOT_SPAN, error=True),
        levels=("error",),
    )
    slow = {"latency_default_ms": 1000}
    assert Sampler(config(**slow)).decide(everything, T0).policy == "error_span"
    assert Sampler(config(**slow, keep_error_spans=False)).decide(everything, T0).policy == "error_log"
    no_errors = {"keep_error_spans": False, "keep_error_logs": False}
    assert Sampler(config(**slow, **no_errors)).decide(everything, T0).policy == "latency"
    assert Sampler(config(**no_errors, probability=1.0)).decide(everything, T0) == Decision(
        True, "probability", "checkout"
    )


# --- probability ---


def five_sigma(count: int, probability: float) -> float:
    return 5 * math.sqrt(count * probability * (1 - probability))


@pytest.mark.parametrize("probability", [0.01, 0.1, 0.5])
def test_probability_keeps_its_share_of_random_trace_ids(probability: float) -> None:
    sampler = Sampler(config(probability=probability))
    ids = random_trace_ids(100_000, seed=14)
    kept = sum(sampler.decide(rooted(t), T0).keep for t in ids)
    assert abs(kept - len(ids) * probability) < five_sigma(len(ids), probability)


def test_probability_keeps_its_share_of_sequential_trace_ids() -> None:
    # ids from a counter: their low bits read as a number would keep a block of neighbours or none
    sampler = Sampler(config(probability=0.1))
    ids = [f"{n:032x}" for n in range(1, 100_001)]
    kept = sum(sampler.decide(rooted(t), T0).keep for t in ids)
    assert abs(kept - 10_000) < five_sigma(100_000, 0.1)


def test_probability_per_root_service() -> None:
    sampler = Sampler(config(probability=0.1, probability_by_service={"checkout": 0.6, "health": 0.0}))
    ids = random_trace_ids(20_000, seed=3)
    kept = {
        service: sum(sampler.decide(rooted(t, service), T0).keep for t in ids)
        for service in ("checkout", "health", "search")
    }
    assert abs(kept["checkout"] - 12_000) < five_sigma(20_000, 0.6)
    assert kept["health"] == 0
    assert abs(kept["search"] - 2_000) < five_sigma(20_000, 0.1)


def test_a_trace_kept_at_one_probability_is_kept_at_any_higher_one() -> None:
    ids = random_trace_ids(5_000, seed=5)
    low, high = Sampler(config(probability=0.1)), Sampler(config(probability=0.3))
    kept_low = {t for t in ids if low.decide(rooted(t), T0).keep}
    kept_high = {t for t in ids if high.decide(rooted(t), T0).keep}
    assert kept_low < kept_high


def test_the_case_of_a_trace_id_does_not_change_its_decision() -> None:
    sampler = Sampler(config(probability=0.5))
    ids = random_trace_ids(200, seed=6)
    assert [sampler.decide(rooted(t), T0) for t in ids] == [
        sampler.decide(rooted(t.upper()), T0) for t in ids
    ]


# --- determinism: two collectors, a restart, another process ---

MIXED_YAML = """
sampling:
  enabled: true
  latency_default_ms: 3
  probability: 0.3
  probability_by_service: {search: 0.8}
  rate_per_service: 10
"""


def mixed_traces(count: int) -> list[tuple[TraceSummary, int]]:
    """Traces of several root services, some failing or slow, in event-time order."""
    rng = random.Random(21)
    out = []
    for number, trace_id in enumerate(random_trace_ids(count, seed=22)):
        service = rng.choice(["checkout", "search", "auth"])
        root = span(trace_id, service=service, error=rng.random() < 0.02, duration_ms=rng.uniform(0.5, 3.2))
        out.append(
            (
                trace(trace_id, root, levels=("error",) if rng.random() < 0.02 else ()),
                T0 + number * SECOND // 200,
            )
        )
    return out


def decisions(sampler: Sampler, traces: list[tuple[TraceSummary, int]]) -> list[Decision]:
    return [sampler.decide(summary, event_ns) for summary, event_ns in traces]


def test_two_collectors_and_a_restart_decide_alike() -> None:
    traces = mixed_traces(3_000)
    settings = parse_config(MIXED_YAML, Root).sampling
    first, second = decisions(Sampler(settings), traces), decisions(Sampler(settings), traces)
    restarted = decisions(Sampler(parse_config(MIXED_YAML, Root).sampling), traces)
    assert first == second == restarted
    # every policy took part, so each one's decision was compared
    assert {(d.keep, d.policy) for d in first} == {
        (True, "error_span"),
        (True, "error_log"),
        (True, "latency"),
        (False, "probability"),
        (True, "rate"),
        (False, "rate"),
    }


def test_another_process_with_another_hash_seed_decides_alike() -> None:
    ids = random_trace_ids(300, seed=9)
    sampler = Sampler(config(probability=0.5))
    here = "".join("k" if sampler.decide(rooted(t), T0).keep else "d" for t in ids)
    script = (
        "import sys\n"
        "from tether.collector.sampling import trace_hash\n"
        "print(''.join('k' if trace_hash(t) < 2**63 else 'd' for t in sys.argv[1:]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(root)}
    there = subprocess.run(
        [sys.executable, "-c", script, *ids], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert there == here
    assert 100 < here.count("k") < 200


# --- rate, in event time ---


def test_rate_limits_each_root_service_in_event_time() -> None:
    sampler = Sampler(config(probability=1.0, rate_per_service=2))
    ids = random_trace_ids(200, seed=11)
    # 10 traces per second of event time for 10 seconds, of each of two services
    kept = {"checkout": 0, "search": 0}
    for number, trace_id in enumerate(ids):
        service = "checkout" if number % 2 else "search"
        decision = sampler.decide(rooted(trace_id, service), T0 + (number // 2) * SECOND // 10)
        assert decision.policy == "rate"
        kept[service] += decision.keep
    # a full bucket of one second's worth, then 2 per second for the 9.9 seconds that follow
    assert all(2 * 9.9 <= count <= 2 + 2 * 9.9 for count in kept.values()), kept


def test_rate_follows_event_time_not_the_wall_clock() -> None:
    sampler = Sampler(config(probability=1.0, rate_per_service=1))
    ids = random_trace_ids(50, seed=12)
    # decided within milliseconds of wall time, but one second apart in event time: all fit
    assert all(sampler.decide(rooted(t), T0 + n * SECOND).keep for n, t in enumerate(ids))
    # and event time that runs back refills nothing
    late = [sampler.decide(rooted(t), T0) for t in random_trace_ids(5, seed=13)]
    assert [d.keep for d in late] == [False] * 5


def test_rate_by_service_overrides_and_zero_drops_the_rest() -> None:
    sampler = Sampler(config(rate_per_service=1000, rate_by_service={"health": 0}))
    ids = random_trace_ids(100, seed=15)
    assert not any(sampler.decide(rooted(t, "health"), T0).keep for t in ids)
    unprobable = Sampler(config(rate_per_service=1000))  # probability 0 set explicitly: it still rules
    assert not any(unprobable.decide(rooted(t), T0).keep for t in ids)


def test_a_rate_alone_is_not_sampled_by_the_default_probability() -> None:
    settings = parse_config("sampling: {enabled: true, rate_per_service: 1000}", Root).sampling
    assert settings.probability == 1.0
    assert parse_config("sampling: {enabled: true}", Root).sampling.probability == 0.1
    ids = random_trace_ids(500, seed=16)
    assert all(Sampler(settings).decide(rooted(t), T0 + n * SECOND).keep for n, t in enumerate(ids))


def test_services_beyond_the_bucket_bound_share_one_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampling, "MAX_RATE_BUCKETS", 2)
    sampler = Sampler(config(probability=1.0, rate_per_service=1, rate_by_service={"named": 1}))
    ids = iter(random_trace_ids(6, seed=18))
    # one second's bucket each for the first two services and a configured one; then one shared
    kept = [sampler.decide(rooted(next(ids), s), T0).keep for s in ("a", "b", "named", "c", "d", "a")]
    assert kept == [True, True, True, True, False, False]


def test_probability_samples_before_the_rate_limits() -> None:
    sampler = Sampler(config(probability=0.5, rate_per_service=1_000_000))
    found = decisions(sampler, [(rooted(t), T0) for t in random_trace_ids(2_000, seed=17)])
    assert {(d.keep, d.policy) for d in found} == {(False, "probability"), (True, "rate")}
    assert abs(sum(d.keep for d in found) - 1000) < five_sigma(2000, 0.5)


# --- configuration ---


def test_config_errors_name_the_key_and_the_fix() -> None:
    text = """
sampling:
  enabled: true
  probability: 1.5
  probability_by_service: {checkout: -0.1}
  latency:
    - {service: payments, threshold_ms: 0}
    - {threshold_ms: 10}
    - {service: search, operation: "GET /q", threshold_ms: 10}
    - {service: search, operation: "GET /q", threshold_ms: 20}
  latency_default_ms: -1
  rate_per_service: -2
  rate_by_service: {"": 3}
  probabilty: 0.2
"""
    with pytest.raises(ConfigError) as raised:
        parse_config(text, Root)
    problems = "\n".join(raised.value.problems)
    expected = {
        "sampling.probability:": "between 0 and 1",
        "sampling.probability_by_service:": "checkout: must be between 0 and 1",
        "sampling.latency.0.threshold_ms:": "more than 0 milliseconds",
        "sampling.latency.1.service:": "Field required",
        "sampling.latency_default_ms:": "more than 0 milliseconds",
        "sampling.rate_per_service:": "0 or more traces per second",
        "sampling.rate_by_service:": "empty service name",
        "sampling.probabilty:": "unknown key",
    }
    for key, fix in expected.items():
        assert any(p.startswith(key) and fix in p for p in raised.value.problems), (key, problems)
    # a list that fails item by item does not also report its duplicates; a clean one does
    with pytest.raises(ConfigError) as duplicated:
        parse_config(
            "sampling:\n  latency:\n"
            "    - {service: search, operation: 'GET /q', threshold_ms: 10}\n"
            "    - {service: search, operation: 'GET /q', threshold_ms: 20}\n",
            Root,
        )
    assert duplicated.value.problems == [
        "sampling.latency: Value error, entry 1 repeats entry 0 (service 'search' operation 'GET /q'): "
        "keep one threshold"
    ]


def test_the_documented_example_is_valid() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "sampling.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    settings = parse_config(example, Root).sampling
    assert settings.enabled and settings.latency and settings.rate_by_service


def test_empty_names_in_latency_rules_are_errors() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("sampling:\n  latency: [{service: '', operation: '', threshold_ms: 5}]\n", Root)
    assert [p.split(":")[0] for p in raised.value.problems] == [
        "sampling.latency.0.service",
        "sampling.latency.0.operation",
    ]


# --- counters ---


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_counts_traces_and_items_by_decision_policy_and_service() -> None:
    registry = CollectorRegistry()
    counts = SamplingCounts(registry)
    counts.count_trace(Decision(True, "error_span", "checkout"), spans=3, logs=5)
    counts.count_trace(Decision(True, "error_span", "checkout"), spans=1, logs=0)
    counts.count_trace(Decision(False, "probability", ""), spans=0, logs=2)
    counts.count_items(Decision(True, "error_span", "checkout"), "logs", 4)  # late logs
    traces, items = "tether_collector_sampled_traces_total", "tether_collector_sampled_items_total"
    kept = {"decision": "keep", "policy": "error_span", "service": "checkout"}
    assert sample(registry, traces, **kept) == 2
    assert sample(registry, items, **kept, kind="spans") == 4
    assert sample(registry, items, **kept, kind="logs") == 9
    dropped = {"decision": "drop", "policy": "probability", "service": "unknown"}
    assert sample(registry, traces, **dropped) == 1
    assert sample(registry, items, **dropped, kind="logs") == 2
    assert sample(registry, items, **dropped, kind="spans") == 0


def test_service_labels_are_capped() -> None:
    registry = CollectorRegistry()
    counts = SamplingCounts(registry, max_services=2)
    for service in ("a", "b", "c", "d", "a"):
        counts.count_trace(Decision(False, "rate", service), spans=1, logs=0)
    by_service = {
        s.labels["service"]: s.value
        for metric in registry.collect()
        if metric.name == "tether_collector_sampled_traces"
        for s in metric.samples
        if s.name.endswith("_total")
    }
    assert by_service == {"a": 2, "b": 1, "_overflow": 2}
