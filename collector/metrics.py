"""The collector's Prometheus metrics, on a registry of its own (one per collector, no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = "tether_collector_"
        self.records_in = Counter(f"{p}records_in", "Kafka records consumed", ["topic"], registry=r)
        self.documents_out = Counter(
            f"{p}documents_out", "Documents acknowledged by Elasticsearch", ["index"], registry=r
        )
        self.correlation = Counter(
            f"{p}log_correlation",
            "Logs by correlation result (span, trace, none, untraced)",
            ["result"],
            registry=r,
        )
        for result in ("span", "inferred", "trace", "none", "untraced"):
            self.correlation.labels(result)  # every result shows, 0 until counted
        self.service_log_correlation = Counter(
            f"{p}service_log_correlation",
            "Traced log lines by their own service and how they were joined (span, inferred, trace, none)",
            ["service", "result"],
            registry=r,
        )
        self.service_traces = Counter(
            f"{p}service_traces",
            "Traces emitted, by root service and whether any log line carried their trace id (logs=yes|no)",
            ["service", "logs"],
            registry=r,
        )
        self.repaired_logs = Counter(
            f"{p}repaired_logs",
            "Indexed log documents written again, joined better by a late span",
            registry=r,
        )
        self.unrepairable_logs = Counter(
            f"{p}unrepairable_logs",
            "Log documents a late span could not repair: correlation.max_repairable_logs was full",
            registry=r,
        )
        self.log_events_dropped = Counter(
            f"{p}log_events_dropped",
            "Log lines not sent to Jaeger as span events: beyond jaeger.max_log_events_per_span",
            registry=r,
        )
        self.late_arrivals = Counter(
            f"{p}late_arrivals", "Spans or logs arriving after their trace was emitted", ["kind"], registry=r
        )
        self.evicted_traces = Counter(
            f"{p}evicted_traces", "Traces emitted before their window ended (buffer full)", registry=r
        )
        self.buffered_traces = Gauge(f"{p}buffered_traces", "Traces waiting for their window", registry=r)
        self.buffered_bytes = Gauge(
            f"{p}buffered_bytes", "Bytes of traces waiting for their window", registry=r
        )
        self.inflight_documents = Gauge(
            f"{p}inflight_documents",
            "Documents handed to Elasticsearch/Jaeger deliveries and not yet acknowledged",
            registry=r,
        )
        self.paused_partitions = Gauge(
            f"{p}paused_partitions",
            "Topic-partitions paused because they were read ahead of their partner in event time",
            registry=r,
        )
        self.consumer_lag = Gauge(
            f"{p}consumer_lag", "Records behind the end of a partition", ["topic", "partition"], registry=r
        )
        self.bulk_latency = Histogram(
            f"{p}bulk_seconds",
            "Elasticsearch bulk request latency",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.bulk_retries = Counter(
            f"{p}bulk_retries",
            "Documents or requests retried (429, 5xx, unreachable, blocked: a write block, security)",
            ["reason"],
            registry=r,
        )
        self.write_blocked = Gauge(
            f"{p}write_blocked",
            "1 while Elasticsearch blocks writes (flood-stage disk, index or cluster block) and "
            "documents wait for the block to lift",
            registry=r,
        )
        self.retention_deleted = Counter(
            f"{p}retention_deleted_indices",
            "Daily indices deleted by retention (elasticsearch.retention_days)",
            ["alias"],
            registry=r,
        )
        self.retention_errors = Counter(
            f"{p}retention_errors",
            "Retention passes or index deletions that failed (retried at the next pass)",
            registry=r,
        )
        self.timestamps_out_of_range = Counter(
            f"{p}timestamps_out_of_range",
            "Documents stamped outside the timestamp window, indexed by their arrival time",
            ["signal"],
            registry=r,
        )
        self.deadlettered = Counter(
            f"{p}deadlettered",
            "Documents Elasticsearch refused for good, sent to the dead-letter index",
            ["index"],
            registry=r,
        )
        self.superseded = Counter(
            f"{p}superseded",
            "Versioned documents (trace summaries) Elasticsearch already held a newer version of: "
            "an older version that arrived late, kept out (not an error)",
            ["index"],
            registry=r,
        )
        self.unparsed_lines = Counter(
            f"{p}unparsed_lines",
            "File log lines not flagged as parse errors that were no usable JSON object (not a string, "
            "not JSON, not an object, nested too deep): indexed as plain messages with "
            "tether.parse_error, by reason",
            ["reason"],
            registry=r,
        )
        self.jaeger_errors = Counter(
            f"{p}jaeger_errors", "Failed Jaeger exports (retried)", ["code"], registry=r
        )
        self.commits = Counter(f"{p}commits", "Offset commits", registry=r)
        self.commit_failures = Counter(
            f"{p}commit_failures", "Offset commits the group refused (it rebalanced without us)", registry=r
        )
        self.native_path = Gauge(
            f"{p}native_path",
            "1 when the native (Rust) fast path runs this path, 0 when the Python reference does",
            ["path"],
            registry=r,
        )
