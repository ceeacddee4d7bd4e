"""The agent's configuration: one typed section per component, loaded by tether.config."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from schemas.records import LOGS_TOPIC, SPANS_TOPIC
from tether.config import Section


class KafkaSinkConfig(Section):
    bootstrap_servers: str = Field(description="host:port[,host:port] of the Kafka brokers")
    logs_topic: str = LOGS_TOPIC
    spans_topic: str = SPANS_TOPIC
    compression: Literal["zstd", "lz4", "gzip", "snappy", "none"] = "zstd"
    linger_ms: int = Field(default=10, ge=0)
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024, ge=64 * 1024, description="must not exceed the broker's message.max.bytes"
    )
    request_timeout_ms: int = Field(default=30_000, ge=1000)


class FileSourceConfig(Section):
    include: list[str] = Field(min_length=1, description="glob patterns of JSON log files to tail")
    exclude: list[str] = Field(default_factory=list)
    start_at: Literal["beginning", "end"] = "beginning"
    poll_interval_seconds: float = Field(default=0.25, gt=0)
    read_chunk_bytes: int = Field(default=512 * 1024, ge=4096)
    max_line_bytes: int = Field(default=256 * 1024, ge=1024)
    fingerprint_bytes: int = Field(default=1024, ge=16)


class OtlpReceiverConfig(Section):
    grpc_endpoint: str = "127.0.0.1:4317"
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    @field_validator("grpc_endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("expected host:port, for example 127.0.0.1:4317")
        return value


class AgentConfig(Section):
    agent_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="stable id of this host's agent; part of every record id",
    )
    data_dir: Path = Field(description="where checkpoints are kept; must survive restarts")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    kafka: KafkaSinkConfig
    files: FileSourceConfig | None = None
    otlp: OtlpReceiverConfig | None = Field(default_factory=OtlpReceiverConfig)
