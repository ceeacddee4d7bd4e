"""The collector's configuration: one typed section per component, loaded by tether.config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tether.collector.red_metrics import RedMetricsConfig
from tether.collector.retention import RetentionDaysConfig
from tether.collector.sampling import SamplingConfig
from tether.config import HostPort, Section
from tether.elasticsearch_security import ElasticsearchConnection
from tether.grpc_security import GrpcClientSecurity
from tether.kafka_security import KafkaSecurity
from tether.log_fields_config import LogFieldsConfig
from tether.ops import COLLECTOR_OPS_ENDPOINT, OpsConfig
from tether.schemas.records import LOGS_TOPIC, SPANS_TOPIC


class KafkaSourceConfig(KafkaSecurity):
    bootstrap_servers: str = Field(description="host:port[,host:port] of the Kafka brokers")
    group_id: str = "tether-collector"
    logs_topic: str = LOGS_TOPIC
    spans_topic: str = SPANS_TOPIC
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = Field(default=100, ge=1)
    fetch_max_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        description="bytes fetched per request; bounds what one poll holds",
    )
    max_partition_fetch_bytes: int = Field(
        default=512 * 1024,
        ge=64 * 1024,
        description="bytes fetched per topic-partition and request, held until consumed (both "
        "topics of every assigned partition); a larger record batch still comes whole",
    )


class CorrelationConfig(Section):
    wait_seconds: float = Field(
        default=5.0, ge=0, description="how long a trace is held after its first item"
    )
    max_pending_traces: int = Field(default=20_000, ge=1, description="traces held at once, all partitions")
    max_pending_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description="estimated memory of held traces, all partitions (record bytes + ~2 kB per document)",
    )
    max_recent_traces: int = Field(
        default=10_000,
        ge=0,
        description="emitted traces remembered (all partitions) for late arrivals: ~2 kB each for a "
        "few spans, more for larger traces",
    )
    max_repairable_logs: int = Field(
        default=20_000,
        ge=0,
        description="log documents of recent traces kept (all partitions) so a late span can rejoin them",
    )
    inference_skew_ms: float = Field(
        default=1.0,
        ge=0,
        description="how far outside a span's time window a line may be stamped and still be inferred in it",
    )


class TimestampsConfig(Section):
    """Documents stamped outside this window around their arrival are indexed by the arrival time
    (the original kept in tether.original_timestamp): each bogus day would be an index of its own."""

    max_age_days: float = Field(default=30.0, gt=0, description="oldest timestamp kept, before arrival")
    max_ahead_hours: float = Field(default=24.0, gt=0, description="latest timestamp kept, after arrival")


class ElasticsearchSinkConfig(ElasticsearchConnection):
    replicas: int = Field(default=1, ge=0)
    shards: int = Field(default=1, ge=1)
    bulk_max_docs: int = Field(
        default=2000,
        ge=1,
        description="documents per bulk request and per delivery; with max_concurrent_bulks, bounds "
        "the documents in flight (~2.5 kB each in memory)",
    )
    bulk_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=64 * 1024, description="bytes of one bulk request body (approximate)"
    )
    max_concurrent_bulks: int = Field(
        default=4, ge=1, description="deliveries in flight while consuming goes on"
    )
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    retention_days: RetentionDaysConfig = Field(
        default_factory=RetentionDaysConfig, description="per alias; daily indices older are deleted"
    )


class JaegerSinkConfig(GrpcClientSecurity):
    enabled: bool = True
    endpoint: HostPort = Field(default="127.0.0.1:14317", description="host:port of its OTLP/gRPC receiver")
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_log_events_per_span: int = Field(
        default=50,
        ge=0,
        description="log lines sent as events of their span; beyond, counted in dropped_events_count",
    )


class CollectorConfig(Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    kafka: KafkaSourceConfig
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    elasticsearch: ElasticsearchSinkConfig = Field(default_factory=ElasticsearchSinkConfig)
    jaeger: JaegerSinkConfig = Field(default_factory=JaegerSinkConfig)
    log_fields: LogFieldsConfig = Field(default_factory=LogFieldsConfig)
    timestamps: TimestampsConfig = Field(default_factory=TimestampsConfig)
    red_metrics: RedMetricsConfig = Field(default_factory=RedMetricsConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    ops: OpsConfig = Field(default_factory=lambda: OpsConfig(endpoint=COLLECTOR_OPS_ENDPOINT))
