"""The agent's Prometheus metrics, on a registry of its own (one per agent, no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = "tether_agent_"
        self.file_lines = Counter(f"{p}file_lines", "Lines read from files and accepted", registry=r)
        self.file_bytes = Counter(f"{p}file_bytes", "Bytes read from files", registry=r)
        self.parse_errors = Counter(f"{p}parse_errors", "Lines that were not a JSON object", registry=r)
        self.truncated_lines = Counter(
            f"{p}truncated_lines",
            "Lines longer than max_line_bytes (truncated or dropped)",
            ["action"],
            registry=r,
        )
        self.files_tailed = Gauge(f"{p}files_tailed", "Files currently tailed", registry=r)
        self.checkpoint_lag = Gauge(
            f"{p}checkpoint_lag_bytes", "Bytes of a file not yet acknowledged by Kafka", ["path"], registry=r
        )
        self.otlp_received = Counter(
            f"{p}otlp_received", "Spans or log records received over OTLP", ["signal", "protocol"], registry=r
        )
        self.otlp_rejected = Counter(
            f"{p}otlp_rejected", "Spans or log records rejected", ["signal", "protocol", "reason"], registry=r
        )
        self.otlp_invalid_ids = Counter(
            f"{p}otlp_invalid_ids",
            "Log records received over OTLP with a malformed id, kept without it (flagged)",
            ["signal", "protocol", "field"],
            registry=r,
        )
        self.otlp_requests = Counter(
            f"{p}otlp_requests", "OTLP requests by outcome", ["signal", "protocol", "outcome"], registry=r
        )
        self.kafka_records = Counter(
            f"{p}kafka_records", "Records (batches) acknowledged by Kafka", ["topic"], registry=r
        )
        self.kafka_bytes = Counter(
            f"{p}kafka_bytes", "Record bytes acknowledged by Kafka", ["topic"], registry=r
        )
        self.kafka_errors = Counter(f"{p}kafka_errors", "Failed Kafka sends (retried)", registry=r)
        self.send_latency = Histogram(
            f"{p}kafka_send_seconds",
            "Time from send to Kafka acknowledgement",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.queue_depth = Gauge(f"{p}queue_depth", "Batches waiting for Kafka in memory", registry=r)
        self.spool_bytes = Gauge(f"{p}spool_bytes", "Bytes in the on-disk spool", registry=r)
        self.spool_batches = Gauge(f"{p}spool_batches", "Batches in the on-disk spool", registry=r)
        self.kafka_connected = Gauge(
            f"{p}kafka_connected",
            "1 once the agent reached Kafka (it accepts into the spool before)",
            registry=r,
        )
        self.dropped = Counter(f"{p}dropped", "Records dropped, by reason", ["reason"], registry=r)
        self.native_path = Gauge(
            f"{p}native_path",
            "1 when the native (Rust) fast path runs this path, 0 when the Python reference does",
            ["path"],
            registry=r,
        )
