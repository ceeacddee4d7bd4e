"""The Kafka record format shared by the agent (producer) and the collector (consumer).

See schemas/README.md for the prose version of this contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

# What a batch, a record, a topic or a partition's offsets carry: the one name for "logs or spans"
# in every tier.
Signal = Literal["logs", "spans"]
SIGNALS: Final[tuple[Signal, ...]] = ("logs", "spans")
# OTLP's own name of each (its paths /v1/logs and /v1/traces; the agent's OTLP metric labels).
OTLP_SIGNAL_NAMES: Final[Mapping[Signal, str]] = {"logs": "logs", "spans": "traces"}

LOGS_TOPIC: Final = "tether.logs"
SPANS_TOPIC: Final = "tether.spans"

# Record header naming the protobuf message in the value, so any consumer can decode it.
SCHEMA_HEADER: Final = "tether.schema"
LOGS_SCHEMA: Final = b"opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest"
SPANS_SCHEMA: Final = b"opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"

# Instrumentation scope of log records read from files: their body is the original line.
FILE_SCOPE: Final = "tether.file"
# Its attributes: what every record of one file chunk shares is sent once, not per record.
ATTR_FILE_PATH: Final = "log.file.path"  # a record attribute in the old layout
ATTR_FILE_FINGERPRINT: Final = "tether.file.fingerprint"
# Log record attributes set by the agent.
ATTR_RECORD_OFFSET: Final = "log.file.record_offset"  # int: the line's byte offset in its file
# The old layout's record id, still read from records older agents left in Kafka.
ATTR_RECORD_ID: Final = "log.record.uid"  # deterministic: agent id, file fingerprint, byte offset
ATTR_PARSE_ERROR: Final = "tether.parse_error"  # the line was not a JSON object
ATTR_TRUNCATED: Final = "tether.truncated"  # the line was longer than max_line_bytes and cut there
ATTR_INVALID_UTF8: Final = "tether.invalid_utf8"  # invalid bytes were replaced by U+FFFD
# The body is the line without the keys its record carries in fields (agent/body_keys.py).
ATTR_KEYS_MOVED: Final = "tether.keys_moved"
# The collector indexes a file line nested deeper than this as its text (collector/documents.py),
# so the agent leaves such lines whole.
DOCUMENT_JSON_MAX_DEPTH: Final = 200
# Set on OTLP log records whose malformed ids the agent cleared (bool true): a trace id that is
# not empty and not valid (its span id is cleared with it), or a span id neither empty nor 8 bytes.
ATTR_INVALID_TRACE_ID: Final = "tether.invalid_trace_id"
ATTR_INVALID_SPAN_ID: Final = "tether.invalid_span_id"
ATTR_LOG_IOSTREAM: Final = "log.iostream"  # stdout or stderr, of a container's log line
# Resource attributes set by the agent.
ATTR_SERVICE_NAME: Final = "service.name"
ATTR_AGENT_ID: Final = "tether.agent.id"
# Resource attributes of a container's log file, from its kubelet path (OpenTelemetry semantic
# names): /var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log; the collector indexes
# them as the keyword fields k8s.namespace.name, ... (restart_count an integer).
ATTR_K8S_NAMESPACE: Final = "k8s.namespace.name"
ATTR_K8S_POD_NAME: Final = "k8s.pod.name"
ATTR_K8S_POD_UID: Final = "k8s.pod.uid"
ATTR_K8S_CONTAINER_NAME: Final = "k8s.container.name"
ATTR_K8S_CONTAINER_RESTART_COUNT: Final = "k8s.container.restart_count"  # int
K8S_ATTRIBUTES: Final = (
    ATTR_K8S_NAMESPACE,
    ATTR_K8S_POD_NAME,
    ATTR_K8S_POD_UID,
    ATTR_K8S_CONTAINER_NAME,
    ATTR_K8S_CONTAINER_RESTART_COUNT,
)

TRACE_ID_BYTES: Final = 16
SPAN_ID_BYTES: Final = 8


def partition_for_trace(trace_id: bytes, partitions: int) -> int:
    """The partition (same number in the logs and the spans topic) that owns a trace.

    The low 64 bits of the 16-byte trace id, read big-endian, modulo the partition count.
    W3C trace ids are random in their rightmost bytes, so this spreads evenly, and it is
    trivial to reproduce in any language.
    """
    return int.from_bytes(trace_id[8:16], "big") % partitions


def is_valid_trace_id(trace_id: bytes) -> bool:
    return len(trace_id) == TRACE_ID_BYTES and trace_id != bytes(TRACE_ID_BYTES)


def is_valid_span_id(span_id: bytes) -> bool:
    """What OTLP requires of a span's span_id (a log record's is optional)."""
    return len(span_id) == SPAN_ID_BYTES and span_id != bytes(SPAN_ID_BYTES)


def is_wellformed_trace_id(trace_id: bytes) -> bool:
    """What OTLP decoders accept in a trace_id field: empty or 16 bytes."""
    return len(trace_id) in (0, TRACE_ID_BYTES)


def is_wellformed_span_id(span_id: bytes) -> bool:
    """What OTLP decoders accept in a span_id field: empty or 8 bytes (the OpenTelemetry
    Collector refuses a whole request holding another length)."""
    return len(span_id) in (0, SPAN_ID_BYTES)


def record_id(agent_id: str, file_fingerprint: str, offset: int) -> str:
    """Deterministic id of a line read from a file: replays of the same line get the same id."""
    return f"{agent_id}:{file_fingerprint}:{offset}"
