"""The agent's configuration: one typed section per component, loaded by tether.config."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tether.config import HostPort, Section
from tether.kafka_security import KafkaSecurity
from tether.log_fields_config import LogFieldsConfig
from tether.ops import AGENT_OPS_ENDPOINT, OpsConfig
from tether.schemas.records import LOGS_TOPIC, SPANS_TOPIC


class KafkaSinkConfig(KafkaSecurity):
    bootstrap_servers: str = Field(description="host:port[,host:port] of the Kafka brokers")
    logs_topic: str = LOGS_TOPIC
    spans_topic: str = SPANS_TOPIC
    # zstd 1 by default: with the routing keys out of the bodies (agent/body_keys.py) a line is
    # ~260 B of OTLP instead of ~380, so level 1 costs less CPU per line than -3 did on whole
    # lines and puts ~57 B per line on Kafka instead of ~122 (docs/performance-history.md has the
    # ratios and costs of each level, and of lz4).
    compression: Literal["zstd", "lz4", "gzip", "snappy", "none"] = "zstd"
    zstd_level: int = Field(
        default=1,
        ge=-7,
        le=22,
        description="zstd level of record batches; negative levels are zstd's fast mode (less CPU, "
        "larger batches), 1 and up compress more (docs/performance-history.md compares them)",
    )
    lz4_level: int = Field(
        default=0,
        ge=0,
        le=16,
        description="lz4 level of record batches; 0-2 is lz4's fast mode, 3 and up its slow high "
        "compression mode (aiokafka's own choice is 9)",
    )
    linger_ms: int = Field(default=10, ge=0)
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024, ge=64 * 1024, description="must not exceed the broker's message.max.bytes"
    )
    request_timeout_ms: int = Field(default=30_000, ge=1000)


class FileSourceConfig(Section):
    include: list[str] = Field(
        min_length=1,
        description="glob patterns of log files to tail: JSON lines, or container logs (CRI or Docker "
        "json-file lines, detected per file, e.g. /var/log/pods/*/*/*.log); relative ones are relative "
        "to the working directory, and the paths in records and checkpoints are absolute",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="glob patterns, matched against the path as found and absolute; compressed files "
        "(*.gz) are always left out",
    )
    start_at: Literal["beginning", "end"] = Field(
        default="beginning", description="where to start in files found at start-up with no checkpoint"
    )
    poll_interval_seconds: float = Field(default=0.25, gt=0)
    read_chunk_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=4096,
        description="bytes read and encoded at a time; larger chunks spread the per-chunk and per-record "
        "costs over more lines (docs/performance-history.md)",
    )
    max_line_bytes: int = Field(default=256 * 1024, ge=64)
    original_body: bool = Field(
        default=False,
        description="keep each line whole in its record's body; by default the keys the record "
        "carries in its own fields (timestamp, level, trace and span id, service) leave the body, "
        "~40 % fewer bytes on Kafka with the same documents (agent/body_keys.py)",
    )
    long_lines: Literal["truncate", "drop"] = "truncate"
    partial_line_timeout_seconds: float = Field(
        default=5.0, gt=0, description="a last line without newline is shipped after this long unchanged"
    )
    fingerprint_bytes: int = Field(
        default=1024,
        ge=16,
        description="how much of a file's beginning is recorded, with its device and inode, to know it "
        "after a restart and to know a copy of it (agent/sources/file.py)",
    )
    checkpoint_interval_seconds: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _chunk_holds_a_line(self) -> FileSourceConfig:
        if self.read_chunk_bytes <= self.max_line_bytes:
            raise ValueError("read_chunk_bytes must be larger than max_line_bytes (raise read_chunk_bytes)")
        return self


class SpoolConfig(Section):
    directory: Path | None = Field(default=None, description="default: <data_dir>/spool")
    max_bytes: int = Field(default=1024**3, ge=1024 * 1024)
    fsync: Literal["always", "never"] = Field(
        default="always", description="always: each spooled batch is on disk before it counts as accepted"
    )
    when_full: Literal["block", "drop_oldest"] = "block"
    max_in_flight_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024 * 1024,
        description="memory for batches Kafka has not acknowledged yet",
    )
    spill_after_seconds: float = Field(
        default=5.0, gt=0, description="a batch not acknowledged this long goes to the spool"
    )


class TlsConfig(Section):
    cert_file: Path
    key_file: Path


class OtlpReceiverConfig(Section):
    grpc_endpoint: HostPort | None = "127.0.0.1:4317"
    http_endpoint: HostPort | None = "127.0.0.1:4318"
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    accept_timeout_seconds: float = Field(
        default=2.0, gt=0, description="how long a request may wait for room before it is told to retry"
    )
    bearer_token: str | None = Field(default=None, description="require `Authorization: Bearer <token>`")
    tls: TlsConfig | None = None


class AgentConfig(Section):
    agent_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="stable id of this host's agent; part of every record id",
    )
    data_dir: Path = Field(description="where checkpoints are kept; must survive restarts")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_seconds: float = Field(default=10.0, gt=0)
    kafka: KafkaSinkConfig
    files: FileSourceConfig | None = None
    otlp: OtlpReceiverConfig | None = Field(default_factory=OtlpReceiverConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    log_fields: LogFieldsConfig = Field(default_factory=LogFieldsConfig)
    ops: OpsConfig = Field(default_factory=lambda: OpsConfig(endpoint=AGENT_OPS_ENDPOINT))

    @property
    def spool_directory(self) -> Path:
        return self.spool.directory or self.data_dir / "spool"
