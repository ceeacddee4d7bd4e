"""tether.config: ${ENV} substitution and validation errors that name the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tether.agent.config import AgentConfig
from tether.collector.config import CollectorConfig
from tether.config import ConfigError, load_config, parse_config, substitute_env

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- substitute_env


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("${X}", {"X": "1"}, "1"),
        ("a ${X} b ${Y} c", {"X": "1", "Y": "2"}, "a 1 b 2 c"),
        ("${X}${X}", {"X": "ab"}, "abab"),
        ("${X:-fallback}", {}, "fallback"),
        ("${X:-fallback}", {"X": "set"}, "set"),
        ("${X:-fallback}", {"X": ""}, ""),  # set but empty is set
        ("${X}", {"X": ""}, ""),
        ("${X:-}", {}, ""),
        ("${KAFKA:-127.0.0.1:9092}", {}, "127.0.0.1:9092"),
        ("${ES:-http://127.0.0.1:9200}", {}, "http://127.0.0.1:9200"),
        ("${_under_score9}", {"_under_score9": "ok"}, "ok"),
        ("$${X}", {}, "${X}"),
        ("$${X}", {"X": "not used"}, "${X}"),
        ("$${X:-d}", {}, "${X:-d}"),
        ("price: $5 and $X and ${", {}, "price: $5 and $X and ${"),
        ("no references", {}, "no references"),
    ],
)
def test_substitute_env(text: str, environ: dict[str, str], expected: str) -> None:
    assert substitute_env(text, environ) == expected


def test_substituted_values_are_not_substituted_again() -> None:
    assert substitute_env("${A}", {"A": "${B}", "B": "no"}) == "${B}"


def test_missing_variable_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        substitute_env("kafka:\n  bootstrap_servers: ${KAFKA_BOOTSTRAP}\n", {}, "agent.yaml")
    error = caught.value
    assert isinstance(error, ValueError)
    assert len(error.problems) == 1
    assert "${KAFKA_BOOTSTRAP}" in error.problems[0]
    assert str(error).startswith("agent.yaml: invalid configuration")
    assert "KAFKA_BOOTSTRAP" in str(error)


def test_every_missing_variable_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        substitute_env("${A} ${B:-ok} ${C}", {"B": "x"})
    problems = caught.value.problems
    assert len(problems) == 2
    assert "${A}" in problems[0]
    assert "${C}" in problems[1]


# ---------------------------------------------------------------- parse_config

AGENT_MINIMAL = "data_dir: /var/lib/tether\nkafka:\n  bootstrap_servers: kafka:9092\n"


def problems(text: str, model: type[AgentConfig] | type[CollectorConfig]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, model, "test.yaml")
    assert str(caught.value).startswith("test.yaml: invalid configuration\n")
    for problem in caught.value.problems:
        assert problem in str(caught.value)
    return caught.value.problems


def test_minimal_agent_config_and_defaults() -> None:
    config = parse_config(AGENT_MINIMAL, AgentConfig)
    assert config.data_dir == Path("/var/lib/tether")
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.kafka.logs_topic == "tether.logs"
    assert config.kafka.spans_topic == "tether.spans"
    assert config.files is None
    assert config.otlp is not None and config.otlp.grpc_endpoint == "127.0.0.1:4317"
    assert config.agent_id  # defaults to the host name


def test_missing_bootstrap_servers_names_the_key_path() -> None:
    found = problems("data_dir: /x\nkafka: {}\n", AgentConfig)
    assert len(found) == 1
    assert found[0].startswith("kafka.bootstrap_servers: ")
    assert "required" in found[0].lower()


def test_missing_bootstrap_servers_in_collector() -> None:
    found = problems("kafka:\n  group_id: g\n", CollectorConfig)
    assert [p.split(":")[0] for p in found] == ["kafka.bootstrap_servers"]


def test_missing_section() -> None:
    found = problems("", CollectorConfig)  # an empty file is an empty mapping
    assert [p.split(":")[0] for p in found] == ["kafka"]
    assert "required" in found[0].lower()


def test_unknown_nested_key_names_the_key_path() -> None:
    found = problems(AGENT_MINIMAL + "  bootstrap_server: typo:9092\n", AgentConfig)
    assert len(found) == 1
    assert found[0].startswith("kafka.bootstrap_server: unknown key")


def test_unknown_top_level_key() -> None:
    found = problems("kafak:\n  bootstrap_servers: k:9092\n", CollectorConfig)
    assert sorted(p.split(":")[0] for p in found) == ["kafak", "kafka"]
    assert any(p.startswith("kafak: unknown key") for p in found)


def test_bad_values_name_their_key_paths() -> None:
    text = (
        "kafka:\n  bootstrap_servers: k:9092\n  max_poll_records: 0\n"
        "correlation:\n  wait_seconds: -1\n"
        "elasticsearch:\n  replicas: lots\n"
    )
    found = problems(text, CollectorConfig)
    assert sorted(p.split(":")[0] for p in found) == [
        "correlation.wait_seconds",
        "elasticsearch.replicas",
        "kafka.max_poll_records",
    ]


def test_list_items_are_named_by_index() -> None:
    found = problems(AGENT_MINIMAL + "files:\n  include: ['/a/*.log', {x: 1}]\n", AgentConfig)
    assert [p.split(":")[0] for p in found] == ["files.include.1"]


def test_literal_choices() -> None:
    found = problems(AGENT_MINIMAL + "  compression: brotli\n", AgentConfig)
    assert [p.split(":")[0] for p in found] == ["kafka.compression"]
    assert "zstd" in found[0]


def test_validator_message_is_kept() -> None:
    found = problems(AGENT_MINIMAL + "otlp:\n  grpc_endpoint: localhost\n", AgentConfig)
    assert len(found) == 1
    assert found[0].startswith("otlp.grpc_endpoint: ")
    assert "expected host:port" in found[0]


@pytest.mark.parametrize(
    ("model", "text", "key"),
    [
        (AgentConfig, AGENT_MINIMAL + "ops:\n  endpoint: localhost\n", "ops.endpoint"),
        (AgentConfig, AGENT_MINIMAL + "otlp:\n  http_endpoint: host:70000\n", "otlp.http_endpoint"),
        (CollectorConfig, "kafka: {bootstrap_servers: k:1}\nops:\n  endpoint: host\n", "ops.endpoint"),
        (CollectorConfig, "kafka: {bootstrap_servers: k:1}\njaeger:\n  endpoint: :4317\n", "jaeger.endpoint"),
    ],
)
def test_every_endpoint_of_both_tiers_is_validated_alike(model: type[Any], text: str, key: str) -> None:
    found = problems(text, model)
    assert len(found) == 1
    assert found[0].startswith(f"{key}: ")
    assert "expected host:port" in found[0]


def test_each_tier_has_its_own_ops_port() -> None:
    agent = parse_config(AGENT_MINIMAL, AgentConfig)
    collector = parse_config("kafka: {bootstrap_servers: k:1}\n", CollectorConfig)
    assert (agent.ops.endpoint, collector.ops.endpoint) == ("127.0.0.1:9464", "127.0.0.1:9465")
    assert type(agent.ops) is type(collector.ops)


def test_invalid_yaml() -> None:
    found = problems("kafka: [unclosed\n", CollectorConfig)
    assert len(found) == 1 and found[0].startswith("not valid YAML")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    assert problems(text, CollectorConfig) == ["the top level must be a mapping of sections"]


def test_config_is_frozen() -> None:
    config = parse_config(AGENT_MINIMAL, AgentConfig)
    with pytest.raises(ValueError):
        config.kafka.bootstrap_servers = "other:9092"


# ---------------------------------------------------------------- load_config


def test_load_config_substitutes_then_validates(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text("kafka:\n  bootstrap_servers: ${BOOT}\ncorrelation:\n  wait_seconds: ${WAIT:-2.5}\n")
    config = load_config(path, CollectorConfig, {"BOOT": "b:9092"})
    assert config.kafka.bootstrap_servers == "b:9092"
    assert config.correlation.wait_seconds == 2.5
    with pytest.raises(ConfigError) as caught:
        load_config(path, CollectorConfig, {})
    assert str(caught.value).startswith(f"{path}: invalid configuration")
    assert "${BOOT}" in str(caught.value)


def test_example_configs_load_with_defaults() -> None:
    agent = load_config(REPO / "deploy" / "examples" / "agent.yaml", AgentConfig, {})
    assert agent.agent_id == "local-agent"
    assert agent.data_dir == Path(".run/agent")
    assert agent.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert agent.files is not None and agent.files.include == [".run/logs/*.log"]
    collector = load_config(
        REPO / "deploy" / "examples" / "collector.yaml", CollectorConfig, {"KAFKA_BOOTSTRAP": "k:1"}
    )
    assert collector.kafka.bootstrap_servers == "k:1"
    assert collector.elasticsearch.replicas == 0
    assert collector.correlation.wait_seconds == 5


def test_load_config_leaves_comments_and_structure_alone(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(
        "# ${UNSET_IN_A_COMMENT} is only mentioned here\n"
        "kafka:\n  bootstrap_servers: ${BOOT}   # ${ALSO_UNSET}\n  group_id: ${GROUP}\n"
    )
    config = load_config(path, CollectorConfig, {"BOOT": "b:9092", "GROUP": "g\nlogs_topic: injected"})
    assert config.kafka.bootstrap_servers == "b:9092"
    assert config.kafka.group_id == "g\nlogs_topic: injected"  # a value, never YAML
    assert config.kafka.logs_topic == "tether.logs"


def test_load_config_names_every_missing_variable_once(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("data_dir: ${DIR}/a\nagent_id: ${DIR}\nkafka:\n  bootstrap_servers: ${BOOT}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, AgentConfig, {})
    assert [p.split(":")[0] for p in caught.value.problems] == ["${DIR}", "${BOOT}"]
