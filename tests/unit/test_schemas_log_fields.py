"""schemas.log_fields: the YAML mapping, key lookup (flat and nested) and severity numbers."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from tether.schemas.log_fields import ROLES, LogFieldMapping, default_mapping


def test_default_mapping_is_the_yaml_file() -> None:
    raw = yaml.safe_load(resources.files("tether.schemas").joinpath("log_fields.yaml").read_text())
    mapping = default_mapping()
    for role in ROLES:
        assert getattr(mapping, role) == tuple(raw[role]), role
        assert isinstance(getattr(mapping, role), tuple)
    assert mapping.severity == {str(k).lower(): int(v) for k, v in raw["severity"].items()}
    assert default_mapping() is mapping  # loaded once


def test_default_mapping_covers_the_common_formats() -> None:
    mapping = default_mapping()
    assert mapping.timestamp[0] == "@timestamp"
    assert {"ts", "time", "timeUnixNano"} <= set(mapping.timestamp)
    assert {"level", "log.level", "severityText", "lvl"} <= set(mapping.level)
    assert {"message", "msg", "body"} <= set(mapping.message)
    assert {"trace_id", "trace.id", "traceId"} <= set(mapping.trace_id)
    assert {"span_id", "span.id", "spanId"} <= set(mapping.span_id)
    assert {"service", "service.name"} <= set(mapping.service)
    assert mapping.data == ("data",)


def test_lookup_flat_key() -> None:
    assert LogFieldMapping.lookup({"level": "info", "x": 1}, ("level", "lvl")) == ("level", "info")


def test_lookup_flat_dotted_key() -> None:
    assert LogFieldMapping.lookup({"log.level": "warn"}, ("level", "log.level")) == ("log.level", "warn")


def test_lookup_nested_dotted_path() -> None:
    record = {"log": {"level": "warn", "logger": "app"}}
    assert LogFieldMapping.lookup(record, ("level", "log.level")) == ("log.level", "warn")
    assert LogFieldMapping.lookup({"a": {"b": {"c": 3}}}, ("a.b.c",)) == ("a.b.c", 3)


def test_lookup_first_name_in_order_wins() -> None:
    record = {"lvl": "debug", "level": "info"}
    assert LogFieldMapping.lookup(record, ("level", "lvl")) == ("level", "info")
    assert LogFieldMapping.lookup(record, ("lvl", "level")) == ("lvl", "debug")
    # An earlier nested path beats a later flat key.
    assert LogFieldMapping.lookup({"log": {"level": "warn"}, "lvl": "x"}, ("log.level", "lvl")) == (
        "log.level",
        "warn",
    )


def test_lookup_flat_key_beats_nested_path_of_the_same_name() -> None:
    record = {"log.level": "flat", "log": {"level": "nested"}}
    assert LogFieldMapping.lookup(record, ("log.level",)) == ("log.level", "flat")


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"log": "a string, not an object"},
        {"log": {"file": "x"}},
        {"log": None},
        {"a": {"b": 1}},
        {"a": {"b": {"d": 1}}},
    ],
)
def test_lookup_missing(record: dict[str, object]) -> None:
    assert LogFieldMapping.lookup(record, ("log.level", "a.b.c", "lvl")) == (None, None)


def test_lookup_present_falsy_values_are_found() -> None:
    assert LogFieldMapping.lookup({"level": ""}, ("level", "lvl")) == ("level", "")
    assert LogFieldMapping.lookup({"level": None, "lvl": "x"}, ("level", "lvl")) == ("level", None)
    assert LogFieldMapping.lookup({"log": {"level": 0}}, ("log.level",)) == ("log.level", 0)


@pytest.mark.parametrize(
    ("level", "number"),
    [
        ("trace", 1),
        ("debug", 5),
        ("DEBUG", 5),
        ("info", 9),
        ("Info", 9),
        ("INFORMATION", 9),
        ("notice", 10),
        ("warn", 13),
        ("WARNING", 13),
        ("error", 17),
        ("err", 17),
        ("critical", 21),
        ("fatal", 21),
        ("panic", 21),
        ("bogus", 0),
        ("", 0),
        # numeric levels of pino and bunyan, as text
        ("30", 9),
        ("50", 17),
        ("060", 21),
        ("35", 0),
        # abbreviations and other libraries' names
        ("WRN", 13),
        ("Verbose", 1),
        ("ERR", 17),
        ("E", 17),
        ("SEVERE", 17),
        ("FINE", 5),
        ("dpanic", 21),
        # Go slog's steps between named levels, bounded to 1-24
        ("INFO+2", 11),
        ("DEBUG-4", 1),
        ("ERROR+8", 24),
        ("WARN+100", 0),
        ("bogus+1", 0),
        ("+1", 0),
    ],
)
def test_severity_number(level: str, number: int) -> None:
    assert default_mapping().severity_number(level) == number
