"""The `log_fields` section: a deployment's names come before the defaults, on both tiers."""

from __future__ import annotations

import orjson
import pytest

from tether.agent.config import AgentConfig
from tether.agent.parse import parse_line
from tether.collector.config import CollectorConfig
from tether.collector.documents import _expand_json_line
from tether.config import ConfigError, parse_config
from tether.log_fields_config import LogFieldsConfig
from tether.schemas.log_fields import default_mapping


def test_names_are_tried_before_the_defaults_and_levels_added() -> None:
    mapping = LogFieldsConfig(level=["sev"], service=["app.id"], severity={"Loud": 21}).mapping()
    assert mapping.level[0] == "sev" and mapping.level[1:] == default_mapping().level
    assert mapping.service[0] == "app.id"
    line = orjson.dumps({"sev": "LOUD", "level": "info", "app": {"id": "billing"}, "service": "x"})
    parsed = parse_line(line, mapping)
    assert (parsed.level, parsed.severity_number, parsed.service) == ("LOUD", 21, "billing")
    assert mapping.severity_number("info") == 9  # the defaults stay


def test_the_collector_takes_the_message_and_removes_the_names_from_data() -> None:
    mapping = LogFieldsConfig(message=["text"], trace_id=["ctx.trace"]).mapping()
    line = orjson.dumps({"text": "hello", "message": "not this one", "ctx": {"trace": "t", "other": 1}})
    assert _expand_json_line(line.decode(), mapping) == {
        "message": "hello",
        "data": {"message": "not this one", "ctx": {"other": 1}},
    }


def test_no_section_is_the_default_mapping() -> None:
    assert LogFieldsConfig().mapping() is default_mapping()


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("level: [log..level]", "log_fields.level: Value error, 'log..level' is no key or dotted path"),
        ("severity: {loud: 30}", "log_fields.severity: Value error, loud: 30 is no OpenTelemetry severity"),
        ("levels: [x]", "log_fields.levels: unknown key"),
    ],
)
def test_mistakes_name_the_key_and_the_fix(section: str, problem: str) -> None:
    text = f"data_dir: /tmp/x\nkafka: {{bootstrap_servers: 'k:9092'}}\nlog_fields: {{{section}}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, AgentConfig)
    assert problem in str(caught.value)


def test_both_tiers_take_the_section() -> None:
    assert "log_fields" in AgentConfig.model_fields and "log_fields" in CollectorConfig.model_fields
