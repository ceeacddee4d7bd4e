"""The peers' configurations of bench/peers_bench.py hold the fairness rules of issue 15: JSON parsed,
keyed by trace id, acks=all (idempotent), zstd at the peers' level, the agent's linger."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "bench" / "peers" / "configs.py"


def load_configs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_configs", CONFIGS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_otelcol_file_pipeline_parses_json_keys_by_trace_and_waits_for_all_replicas() -> None:
    configs = load_configs()
    config = configs.otelcol_config(
        bootstrap="127.0.0.1:9092",
        logs_topic="bench.x.logs",
        spans_topic="bench.x.spans",
        metrics_port=8888,
        include="/tmp/logs/*.log",
    )
    config = yaml.safe_load(yaml.safe_dump(config))  # what the Collector reads
    assert config["service"]["pipelines"] == {"logs": {"receivers": ["file_log"], "exporters": ["kafka"]}}
    (parser,) = config["receivers"]["file_log"]["operators"]
    assert parser["type"] == "json_parser"
    assert parser["trace"]["trace_id"]["parse_from"] == "attributes.trace_id"
    assert parser["severity"]["parse_from"] == "attributes.level"
    kafka = config["exporters"]["kafka"]
    assert kafka["partition_logs_by_trace_id"] is True
    assert kafka["logs"] == {"topic": "bench.x.logs", "encoding": "otlp_proto"}
    producer = kafka["producer"]
    assert producer["required_acks"] == "all"
    assert producer["compression"] == "zstd"
    assert producer["compression_params"]["level"] == configs.PEER_ZSTD_LEVEL
    assert kafka["sending_queue"] == {"block_on_overflow": True}  # waits for Kafka, drops nothing


def test_otelcol_span_pipeline_answers_after_kafka() -> None:
    config = load_configs().otelcol_config(
        bootstrap="a:1,b:2",
        logs_topic="l",
        spans_topic="s",
        metrics_port=8888,
        grpc_endpoint="127.0.0.1:4317",
    )
    assert config["service"]["pipelines"] == {"traces": {"receivers": ["otlp"], "exporters": ["kafka"]}}
    kafka = config["exporters"]["kafka"]
    assert kafka["brokers"] == ["a:1", "b:2"]
    assert kafka["partition_traces_by_id"] is True
    assert kafka["sending_queue"] == {"block_on_overflow": True, "wait_for_result": True}
    assert "file_log" not in config["receivers"]


def test_rsyslog_config_parses_json_and_produces_keyed_idempotent_zstd(tmp_path: Path) -> None:
    configs = load_configs()
    text = configs.rsyslog_config(
        bootstrap="127.0.0.1:9092,127.0.0.1:9093",
        topic="bench.x.rsyslog.logs",
        include="/tmp/logs/*.log",
        state_dir=tmp_path,
    )
    assert 'module(load="mmjsonparse")' in text
    assert re.search(r'action\(type="mmjsonparse" cookie="" useRawMsg="on"\)', text)
    assert 'string="%$!trace_id%"' in text
    assert re.search(r'key="peer_trace_key" dynaKey="on" partitions.auto="on"', text)
    params = re.search(r"confParam=\[([^]]*)\]", text)
    assert params is not None
    assert set(re.findall(r'"([^"]+)"', params.group(1))) == {
        "acks=all",
        "enable.idempotence=true",
        "compression.codec=zstd",
        f"compression.level={configs.PEER_ZSTD_LEVEL}",
        "linger.ms=10",
    }
    assert 'broker=["127.0.0.1:9092","127.0.0.1:9093"]' in text
    assert f'workDirectory="{tmp_path}"' in text


def test_otelcol_consumer_reads_both_agent_topics_as_otlp_proto_from_the_start() -> None:
    configs = load_configs()
    sink = configs.otelcol_json_to_kafka(bootstrap="k:1", logs_topic="out.l", spans_topic="out.s")
    config = configs.otelcol_consumer_config(
        bootstrap="a:1,b:2",
        logs_topic="agent.l",
        spans_topic="agent.s",
        group_id="g",
        metrics_port=8888,
        exporters={"kafka": sink, "debug": {"verbosity": "basic"}},
    )
    config = yaml.safe_load(yaml.safe_dump(config))  # what the Collector reads
    receiver = config["receivers"]["kafka"]
    assert receiver["brokers"] == ["a:1", "b:2"]
    assert receiver["logs"] == {"topics": ["agent.l"], "encoding": "otlp_proto"}
    assert receiver["traces"] == {"topics": ["agent.s"], "encoding": "otlp_proto"}
    assert receiver["initial_offset"] == "earliest"
    assert config["service"]["pipelines"]["logs"] == {"receivers": ["kafka"], "exporters": ["kafka", "debug"]}
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["kafka", "debug"]
    assert sink["logs"] == {"topic": "out.l", "encoding": "otlp_json"}
    assert sink["producer"]["required_acks"] == "all"


def test_otelcol_elasticsearch_exporter_keeps_its_defaults_but_queue_size_and_flush_timeout() -> None:
    configs = load_configs()
    sink = configs.otelcol_elasticsearch(
        url="http://127.0.0.1:9200", logs_index="logs-peer.x-default", traces_index="traces-peer.x-default"
    )
    config = configs.otelcol_consumer_config(
        bootstrap="a:1",
        logs_topic="agent.l",
        spans_topic="agent.s",
        group_id="g",
        metrics_port=8888,
        exporters={"elasticsearch": sink},
    )
    config = yaml.safe_load(yaml.safe_dump(config))  # what the Collector reads
    assert config["service"]["pipelines"]["logs"] == {"receivers": ["kafka"], "exporters": ["elasticsearch"]}
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["elasticsearch"]
    exporter = config["exporters"]["elasticsearch"]
    # a run's own data streams, one per signal, so that its documents are counted exactly
    assert exporter["endpoint"] == "http://127.0.0.1:9200"
    assert exporter["logs_index"] == "logs-peer.x-default"
    assert exporter["traces_index"] == "traces-peer.x-default"
    # the user's defaults: no mapping mode, compression, retry or id setting of ours; of the queue,
    # its size (in bytes: 10 requests can never fill a 1 MB batch) and the flush timeout (the last
    # partial batch of a backlog would idle 10 s)
    assert set(exporter) == {"endpoint", "logs_index", "traces_index", "sending_queue"}
    queue = exporter["sending_queue"]
    assert queue == {"sizer": "bytes", "queue_size": 50_000_000, "batch": {"flush_timeout": "1s"}}
    assert queue["queue_size"] >= 5_000_000  # at least one batch of the exporter's 5 MB maximum
