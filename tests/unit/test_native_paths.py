"""tether.native: which path runs natively is decided in one place, and the names and limits the
Rust paths share with Python (tether_fastlog.constants()) are Python's."""

from __future__ import annotations

import logging
from typing import Literal

import orjson
import pytest
import tether_fastlog

from tether import native
from tether.agent import split as agent_split
from tether.agent.chunks import NativeChunkEncoder, PythonChunkEncoder, chunk_encoder
from tether.agent.config import FileSourceConfig
from tether.agent.metrics import AgentMetrics
from tether.collector import documents
from tether.collector.metrics import CollectorMetrics
from tether.schemas import records
from tether.schemas.log_fields import default_mapping


def test_every_path_is_native_with_the_extension_installed() -> None:
    choices = native.agent_paths() + native.collector_paths()
    assert [c.path for c in choices] == ["file_lines", "otlp_split", "log_documents", "span_documents"]
    assert all(c.native and c.reason == "" for c in choices), choices
    assert [c.describe() for c in choices] == [
        "file_lines: native",
        "otlp_split: native",
        "log_documents: native",
        "span_documents: native",
    ]
    assert agent_split.native_available()
    assert documents._file_log_documents is not None
    assert documents._span_documents is not None


@pytest.mark.parametrize("long_lines", ["truncate", "drop"])
def test_file_lines_are_native_under_either_long_lines_action(
    long_lines: Literal["truncate", "drop"],
) -> None:
    encoder = chunk_encoder(
        agent_id="a", partitions=3, mapping=default_mapping(), max_line_bytes=1024, long_lines=long_lines
    )
    assert isinstance(encoder, NativeChunkEncoder)


def test_without_the_extension_every_path_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_import_error", "No module named 'tether_fastlog'")
    choices = native.agent_paths() + native.collector_paths()
    assert not any(c.native for c in choices)
    assert choices[0].describe() == (
        "file_lines: python (tether_fastlog is not installed (No module named 'tether_fastlog'))"
    )
    encoder = chunk_encoder(
        agent_id="a", partitions=3, mapping=default_mapping(), max_line_bytes=1024, long_lines="drop"
    )
    assert isinstance(encoder, PythonChunkEncoder) and encoder.long_lines == "drop"
    with pytest.raises(RuntimeError, match="not installed"):
        native.extension()


def test_an_older_extension_names_what_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    class Old:
        encode_chunk = staticmethod(tether_fastlog.encode_chunk)

    monkeypatch.setattr(native, "_module", Old())
    choice = native.choose("file_lines")
    assert not choice.native and choice.reason == (
        "tether_fastlog is too old: no FieldMapping, ENCODE_CHUNK_READS_CONTAINER_LOGS"
    )
    assert native.choose("otlp_split").reason == (
        "tether_fastlog is too old: no split_traces, split_logs, SPLIT_TRACES_CHECKS_SPAN_IDS, "
        "SPLIT_WRITES_VALID_IDS"
    )


def test_the_native_mapping_is_converted_once_per_mapping() -> None:
    mapping = default_mapping()
    converted = native.field_mapping(mapping)
    assert isinstance(converted, tether_fastlog.FieldMapping)
    assert native.field_mapping(mapping) is converted
    other = type(mapping)(**{**mapping.__dict__, "level": ("lvl",)})
    assert native.field_mapping(other) is not converted


def test_only_the_agent_refuses_more_alias_keys_than_its_scanner_holds() -> None:
    names = [f"k{i}" for i in range(129)]
    mapping = tether_fastlog.FieldMapping(
        message=["msg"], timestamp=names, level=[], trace_id=[], span_id=[], service=[], data=[], severity={}
    )
    with pytest.raises(ValueError, match="at most 128 distinct alias keys"):
        tether_fastlog.encode_chunk(b'{"k1":1}\n', 0, mapping, 1, 0, "a", "f", "/p", 1)
    assert tether_fastlog.file_log_documents(b"", mapping) == []


def test_both_tiers_export_the_native_path_gauge() -> None:
    agent, collector = AgentMetrics(), CollectorMetrics()
    agent.native_path.labels("file_lines").set(1)
    collector.native_path.labels("log_documents").set(0)
    assert agent.registry.get_sample_value("tether_agent_native_path", {"path": "file_lines"}) == 1
    assert collector.registry.get_sample_value("tether_collector_native_path", {"path": "log_documents"}) == 0


def test_announce_sets_the_gauge_and_warns_of_python_paths(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = AgentMetrics()
    log = logging.getLogger("tether.test")
    with caplog.at_level(logging.INFO, logger="tether.test"):
        native.announce(native.agent_paths(), metrics.native_path, log)
    assert caplog.records[-1].levelno == logging.INFO
    assert caplog.records[-1].getMessage() == "native paths: file_lines: native; otlp_split: native"
    monkeypatch.setattr(native, "_module", None)
    with caplog.at_level(logging.INFO, logger="tether.test"):
        native.announce(native.agent_paths(), metrics.native_path, log)
    assert caplog.records[-1].levelno == logging.WARNING
    assert metrics.registry.get_sample_value("tether_agent_native_path", {"path": "otlp_split"}) == 0


def test_shared_constants_are_pythons() -> None:
    constants = tether_fastlog.constants()
    python = {name: getattr(records, name) for name in constants if hasattr(records, name)}
    python["JSON_MAX_DEPTH"] = documents.JSON_MAX_DEPTH
    python["DEFAULT_MAX_LINE_BYTES"] = FileSourceConfig.model_fields["max_line_bytes"].default
    python["ORJSON_MAX_DEPTH"] = _orjson_max_depth()
    assert constants == python


def _orjson_max_depth() -> int:
    """The deepest nesting orjson loads (the top-level container is level 1)."""
    depth = 1
    while True:
        try:
            orjson.loads(b"[" * (depth + 1) + b"]" * (depth + 1))
        except orjson.JSONDecodeError:
            return depth
        depth += 1
