"""The collector's memory bounds: typed, validated with the key named, and in the example."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.collector.config import CollectorConfig
from tether.config import ConfigError, parse_config, substitute_env

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "collector.yaml"
MINIMAL = "kafka: {bootstrap_servers: 'k:9092'}\n"


def test_memory_bounds_have_collector_wide_defaults() -> None:
    config = parse_config(MINIMAL, CollectorConfig)
    assert config.correlation.max_recent_traces == 10_000  # all partitions, not each
    assert config.elasticsearch.bulk_max_docs * config.elasticsearch.max_concurrent_bulks == 8_000


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("correlation: {max_recent_traces: -1}", "correlation.max_recent_traces"),
        ("correlation: {max_pending_bytes: 1000}", "correlation.max_pending_bytes"),
        ("elasticsearch: {bulk_max_docs: 0}", "elasticsearch.bulk_max_docs"),
        ("elasticsearch: {max_concurrent_bulks: many}", "elasticsearch.max_concurrent_bulks"),
        ("kafka: {bootstrap_servers: 'k:9092', fetch_max_bytes: 10}", "kafka.fetch_max_bytes"),
    ],
)
def test_a_bad_bound_names_its_key(text: str, key: str) -> None:
    base = "" if text.startswith("kafka") else MINIMAL
    with pytest.raises(ConfigError) as caught:
        parse_config(base + text + "\n", CollectorConfig, "collector.yaml")
    assert [problem.split(":")[0] for problem in caught.value.problems] == [key]


def test_the_examples_memory_bounds_are_the_defaults() -> None:
    """Uncommented, the example's commented bounds are what the collector runs with anyway."""
    lines = EXAMPLE.read_text().splitlines()
    keys = (
        "max_pending_bytes",
        "max_recent_traces",
        "bulk_max_docs",
        "fetch_max_bytes",
        "max_partition_fetch_bytes",
    )
    uncommented = [
        line.replace("# ", "", 1) if any(f"# {key}:" in line for key in keys) else line for line in lines
    ]
    # `${ENV}` is named in a comment on secrets; every other variable has a default
    example = parse_config(substitute_env("\n".join(uncommented), {"ENV": "x"}), CollectorConfig)
    default = parse_config(MINIMAL, CollectorConfig)
    assert example.correlation.max_pending_bytes == default.correlation.max_pending_bytes
    assert example.correlation.max_recent_traces == default.correlation.max_recent_traces
    assert example.elasticsearch.bulk_max_docs == default.elasticsearch.bulk_max_docs
    assert example.kafka.fetch_max_bytes == default.kafka.fetch_max_bytes
    assert example.kafka.max_partition_fetch_bytes == default.kafka.max_partition_fetch_bytes
