"""Configurations of the peers that bench/peers_bench.py runs beside the agent.

Each is set up to do the agent's job on the agent's terms (the fairness rules of issue 15): the same
generated lines read from a file, JSON parsed, records keyed by trace id, acks=all with an idempotent
producer, zstd, into the same Kafka, one core. What each still does differently is said where it is
configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# zstd's own default level, which both peers' clients use when asked for zstd: librdkafka (rsyslog)
# and franz-go (the Collector's "SpeedDefault"). The agent runs once at this level too.
PEER_ZSTD_LEVEL = 3


def otelcol_config(
    *,
    bootstrap: str,
    logs_topic: str,
    spans_topic: str,
    metrics_port: int,
    include: str | None = None,
    grpc_endpoint: str | None = None,
) -> dict[str, Any]:
    """The OpenTelemetry Collector: filelog + json_parser -> kafka (logs) when `include` is given,
    otlp (gRPC) -> kafka (traces) when `grpc_endpoint` is."""
    exporter: dict[str, Any] = {
        "brokers": bootstrap.split(","),
        "logs": {"topic": logs_topic, "encoding": "otlp_proto"},
        "traces": {"topic": spans_topic, "encoding": "otlp_proto"},
        # each log record / span goes out keyed by its trace id, as the agent's records are
        "partition_logs_by_trace_id": True,
        "partition_traces_by_id": True,
        "producer": {
            "required_acks": "all",  # franz-go is idempotent with acks=all, as the agent is
            "compression": "zstd",
            "compression_params": {"level": PEER_ZSTD_LEVEL},
            "linger": "10ms",  # the agent's linger_ms
        },
        # Lossless, as the agent is: at its default a full queue drops what the file_log receiver
        # hands it (seen: 142,800 of 300,000 lines refused), where the agent waits for Kafka.
        "sending_queue": {"block_on_overflow": True},
    }
    receivers: dict[str, Any] = {}
    pipelines: dict[str, Any] = {}
    if include is not None:
        receivers["file_log"] = {
            "include": [include],
            "start_at": "beginning",
            "poll_interval": "50ms",  # the agent bench's poll interval
            "operators": [
                {
                    # the five correlation fields the agent extracts, into their OTLP fields; the
                    # rest of the object stays parsed in attributes (the agent keeps the raw body)
                    "type": "json_parser",
                    "timestamp": {
                        "parse_from": 'attributes["@timestamp"]',
                        "layout_type": "gotime",
                        "layout": "2006-01-02T15:04:05.999999999Z07:00",
                    },
                    "severity": {"parse_from": "attributes.level"},
                    "trace": {
                        "trace_id": {"parse_from": "attributes.trace_id"},
                        "span_id": {"parse_from": "attributes.span_id"},
                    },
                }
            ],
        }
        pipelines["logs"] = {"receivers": ["file_log"], "exporters": ["kafka"]}
    if grpc_endpoint is not None:
        receivers["otlp"] = {"protocols": {"grpc": {"endpoint": grpc_endpoint}}}
        pipelines["traces"] = {"receivers": ["otlp"], "exporters": ["kafka"]}
        # The agent answers an OTLP request once Kafka acknowledged it (or its spool fsynced it);
        # with wait_for_result the Collector answers after Kafka's ack too, its 10 senders kept.
        exporter["sending_queue"]["wait_for_result"] = True
    if not pipelines:
        raise ValueError("give include (file logs) or grpc_endpoint (OTLP spans), or both")
    return {
        "receivers": receivers,
        "exporters": {"kafka": exporter},
        "service": {
            "pipelines": pipelines,
            "telemetry": _telemetry(metrics_port),
        },
    }


def _telemetry(metrics_port: int) -> dict[str, Any]:
    """Warnings only, and the Collector's own metrics (what the benches read) on a local port."""
    return {
        "logs": {"level": "warn"},
        "metrics": {
            "level": "basic",
            "readers": [{"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": metrics_port}}}}],
        },
    }


def otelcol_consumer_config(
    *,
    bootstrap: str,
    logs_topic: str,
    spans_topic: str,
    group_id: str,
    metrics_port: int,
    exporters: dict[str, Any],
) -> dict[str, Any]:
    """The OpenTelemetry Collector as a consumer of the agent's topics, the place of the tether
    collector: the kafka receiver decoding otlp_proto (what the agent writes) from the earliest
    offset of a group of its own, logs and traces into every exporter of `exporters`."""
    receiver: dict[str, Any] = {
        "brokers": bootstrap.split(","),
        "group_id": group_id,
        "client_id": group_id,
        "initial_offset": "earliest",  # a backlog replay, as the tether collector's new group reads
        "logs": {"topics": [logs_topic], "encoding": "otlp_proto"},
        "traces": {"topics": [spans_topic], "encoding": "otlp_proto"},
    }
    names = list(exporters)
    return {
        "receivers": {"kafka": receiver},
        "exporters": exporters,
        "service": {
            "pipelines": {
                "logs": {"receivers": ["kafka"], "exporters": names},
                "traces": {"receivers": ["kafka"], "exporters": names},
            },
            "telemetry": _telemetry(metrics_port),
        },
    }


def otelcol_json_to_kafka(*, bootstrap: str, logs_topic: str, spans_topic: str) -> dict[str, Any]:
    """A kafka exporter writing OTLP JSON (the Collector's own pdata JSON marshaller, as its file
    exporter writes) to two topics: what the interop test reads back, and the bench's peer sink
    that, like an Elasticsearch exporter, encodes every item as JSON and ships it with acks."""
    return {
        "brokers": bootstrap.split(","),
        "logs": {"topic": logs_topic, "encoding": "otlp_json"},
        "traces": {"topic": spans_topic, "encoding": "otlp_json"},
        "producer": {"required_acks": "all", "linger": "10ms"},
        "sending_queue": {"block_on_overflow": True},  # lossless: waits for Kafka, drops nothing
    }


# The elasticsearch exporter's own default flush timeout (10 s) is for a trickle: on a backlog replay
# only the last, partial batch of each signal waits for it, idle, which would add up to 10 s to a
# run of tens of seconds. 1 s is the tether collector's correlation wait in the same benchmark.
PEER_ES_FLUSH_TIMEOUT = "1s"
# Its default queue holds 10 requests (one a Kafka record: ~110 items, ~45 kB of OTLP from the
# agent), and a request leaves the queue's count only once exported, so a batch can never reach its
# 1 MB minimum: each waits out the flush timeout. Measured so (queue at its default, 1 s timeout):
# 1,700-2,040 items/s, the process idle 97% of the time. Sized in bytes instead, to what its own
# defaults send at once: 10 consumers x 5 MB batches.
PEER_ES_QUEUE_BYTES = 10 * 5_000_000


def otelcol_elasticsearch(*, url: str, logs_index: str, traces_index: str) -> dict[str, Any]:
    """The Collector's elasticsearch exporter as a user gets it, into data streams of its own.

    Its defaults stand: the otel mapping mode (the default; the `mapping::mode` setting is
    deprecated and ignored at v0.150.0), gzip at level 1, documents with ids Elasticsearch makes,
    blocking when the queue is full, 10 consumers, batches of 1-5 MB; but the queue is sized in
    bytes (PEER_ES_QUEUE_BYTES says why) and the flush timeout is 1 s (PEER_ES_FLUSH_TIMEOUT).
    Static indices (data streams: the otel mode asks Elasticsearch to require one) so that a run's
    documents are counted exactly."""
    return {
        "endpoint": url,
        "logs_index": logs_index,
        "traces_index": traces_index,
        "sending_queue": {
            "sizer": "bytes",
            "queue_size": PEER_ES_QUEUE_BYTES,
            "batch": {"flush_timeout": PEER_ES_FLUSH_TIMEOUT},
        },
    }


def rsyslog_config(*, bootstrap: str, topic: str, include: str, state_dir: Path) -> str:
    """rsyslog: imfile -> mmjsonparse -> omkafka, keyed by the parsed trace id. What goes to Kafka
    is the parsed object written back as JSON (so the parse is real work that reaches the topic)."""
    brokers = ",".join(f'"{broker}"' for broker in bootstrap.split(","))
    producer = [
        "acks=all",
        "enable.idempotence=true",
        "compression.codec=zstd",
        f"compression.level={PEER_ZSTD_LEVEL}",
        "linger.ms=10",
    ]
    conf_params = ",".join(f'"{param}"' for param in producer)
    return f"""\
global(workDirectory="{state_dir}" maxMessageSize="64k")
module(load="imfile" mode="inotify")
module(load="mmjsonparse")
module(load="omkafka")
template(name="peer_trace_key" type="string" string="%$!trace_id%")
template(name="peer_json" type="string" string="%$!all-json-plain%")
input(type="imfile" file="{include}" tag="app" ruleset="peer" addMetadata="off")
ruleset(name="peer") {{
  # the whole line is the JSON object: no "@cee:" cookie
  action(type="mmjsonparse" cookie="" useRawMsg="on")
  action(type="omkafka" broker=[{brokers}] topic="{topic}"
         key="peer_trace_key" dynaKey="on" partitions.auto="on"
         template="peer_json" confParam=[{conf_params}])
}}
"""
