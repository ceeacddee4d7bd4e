"""Building the Kafka record values: OTLP export requests, one per partition.

A batch is split by the partition that owns each item's trace (schemas.records), so every
span and log line of one trace lands in the same-numbered partition of both topics.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tether.agent.container_logs import PodContainer, runtime_time_ns
from tether.agent.parse import ParsedLine
from tether.schemas.records import (
    ATTR_AGENT_ID,
    ATTR_FILE_FINGERPRINT,
    ATTR_FILE_PATH,
    ATTR_INVALID_SPAN_ID,
    ATTR_INVALID_TRACE_ID,
    ATTR_INVALID_UTF8,
    ATTR_K8S_CONTAINER_NAME,
    ATTR_K8S_CONTAINER_RESTART_COUNT,
    ATTR_K8S_NAMESPACE,
    ATTR_K8S_POD_NAME,
    ATTR_K8S_POD_UID,
    ATTR_KEYS_MOVED,
    ATTR_LOG_IOSTREAM,
    ATTR_PARSE_ERROR,
    ATTR_RECORD_OFFSET,
    ATTR_SERVICE_NAME,
    ATTR_TRUNCATED,
    FILE_SCOPE,
    is_valid_span_id,
    is_valid_trace_id,
    is_wellformed_span_id,
    is_wellformed_trace_id,
    partition_for_trace,
)


@dataclass(frozen=True, slots=True)
class FileLine:
    parsed: ParsedLine
    offset: int  # of the line's first byte in its file
    # Of a container log record (agent/container_logs.py): its stream, and the runtime's time of
    # its first line, used when the content has no timestamp of its own.
    stream: str = ""
    runtime_time: bytes = b""


class UntracedSpreader:
    """Spreads items without a trace id evenly: each batch goes to the next partition in turn."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next_partition(self, partitions: int) -> int:
        return next(self._counter) % partitions


def _string_attr(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _pod_attributes(pod: PodContainer | None) -> list[KeyValue]:
    """Resource attributes of a file of a Kubernetes container, after the agent's id."""
    if pod is None:
        return []
    return [
        _string_attr(ATTR_K8S_NAMESPACE, pod.namespace),
        _string_attr(ATTR_K8S_POD_NAME, pod.pod),
        _string_attr(ATTR_K8S_POD_UID, pod.uid),
        _string_attr(ATTR_K8S_CONTAINER_NAME, pod.container),
        KeyValue(key=ATTR_K8S_CONTAINER_RESTART_COUNT, value=AnyValue(int_value=pod.restart_count)),
    ]


def encode_file_lines(
    lines: Sequence[FileLine],
    *,
    path: str,
    fingerprint: str,
    agent_id: str,
    observed_ns: int,
    partitions: int,
    untraced_partition: int,
    pod: PodContainer | None = None,
) -> dict[int, bytes]:
    """ExportLogsServiceRequest bytes per partition for lines read from one file.

    A file of a Kubernetes container (`pod`) adds its pod and container to the resource, and a
    line naming no service gets the container's name as its service.

    The path and the fingerprint are scope attributes and each record carries only its offset, of
    which the collector rebuilds the record id (schemas.records.record_id): in every record, the
    path and the id string were ~100 bytes per line to copy and compress.
    """
    grouped: dict[int, dict[str, list[LogRecord]]] = defaultdict(lambda: defaultdict(list))
    parse_error_attr = KeyValue(key=ATTR_PARSE_ERROR, value=AnyValue(bool_value=True))
    truncated_attr = KeyValue(key=ATTR_TRUNCATED, value=AnyValue(bool_value=True))
    invalid_utf8_attr = KeyValue(key=ATTR_INVALID_UTF8, value=AnyValue(bool_value=True))
    keys_moved_attr = KeyValue(key=ATTR_KEYS_MOVED, value=AnyValue(bool_value=True))
    stream_attrs = {s: _string_attr(ATTR_LOG_IOSTREAM, s) for s in ("stdout", "stderr")}
    default_service = pod.container if pod is not None else ""
    for line in lines:
        p = line.parsed
        partition = partition_for_trace(p.trace_id, partitions) if p.trace_id else untraced_partition
        attributes = [KeyValue(key=ATTR_RECORD_OFFSET, value=AnyValue(int_value=line.offset))]
        if line.stream:
            attributes.append(stream_attrs[line.stream])
        if p.parse_error:
            attributes.append(parse_error_attr)
        if p.truncated:
            attributes.append(truncated_attr)
        if p.invalid_utf8:
            attributes.append(invalid_utf8_attr)
        if p.keys_moved:
            attributes.append(keys_moved_attr)
        grouped[partition][p.service or default_service].append(
            LogRecord(
                time_unix_nano=p.time_unix_nano or runtime_time_ns(line.runtime_time) or observed_ns,
                observed_time_unix_nano=observed_ns,
                severity_number=p.severity_number,  # type: ignore[arg-type]
                severity_text=p.level,
                body=AnyValue(string_value=p.text),
                trace_id=p.trace_id,
                span_id=p.span_id,
                attributes=attributes,
            )
        )
    scope = InstrumentationScope(
        name=FILE_SCOPE,
        attributes=[_string_attr(ATTR_FILE_PATH, path), _string_attr(ATTR_FILE_FINGERPRINT, fingerprint)],
    )
    agent_attrs = [_string_attr(ATTR_AGENT_ID, agent_id), *_pod_attributes(pod)]
    out: dict[int, bytes] = {}
    for partition, by_service in grouped.items():
        request = ExportLogsServiceRequest(
            resource_logs=[
                ResourceLogs(
                    resource=Resource(
                        attributes=[_string_attr(ATTR_SERVICE_NAME, service), *agent_attrs]
                        if service
                        else agent_attrs
                    ),
                    scope_logs=[ScopeLogs(scope=scope, log_records=records)],
                )
                for service, records in by_service.items()
            ]
        )
        out[partition] = request.SerializeToString()
    return out


@dataclass(frozen=True, slots=True)
class SplitResult:
    records: dict[int, bytes]
    rejected: int
    # of `rejected`, the items with a valid trace id but without the span id their shape requires
    rejected_span_id: int = field(default=0, kw_only=True)
    # of `rejected`, spans with valid ids but a malformed parent_span_id or link id
    rejected_related_id: int = field(default=0, kw_only=True)
    # log records kept without their malformed trace id (and span id) / span id, flagged
    cleared_trace_id: int = field(default=0, kw_only=True)
    cleared_span_id: int = field(default=0, kw_only=True)


@dataclass(frozen=True, slots=True)
class OtlpShape:
    """Field names of an OTLP export request: request.<resources>[].<scopes>[].<items>[], and
    whether an item must have a valid span id (spans: rejected without one) or not (log records:
    their malformed ids are cleared instead)."""

    resources: str
    scopes: str
    items: str
    span_id_required: bool


TRACES = OtlpShape("resource_spans", "scope_spans", "spans", span_id_required=True)
LOGS = OtlpShape("resource_logs", "scope_logs", "log_records", span_id_required=False)

Request = TypeVar("Request", ExportTraceServiceRequest, ExportLogsServiceRequest)
Item = TypeVar("Item", Span, LogRecord)


def split_request(
    request: Request, shape: OtlpShape, partitions: int, untraced_partition: int | None
) -> SplitResult:
    """Per-partition request bytes, each item under a copy of its resource and scope.

    Items without a valid trace id go to `untraced_partition`, or are rejected when it is None
    (a span must have a trace id; a log record need not). Items of a shape that requires a span
    id are rejected without a valid one (a span's document id is its trace id + span id), and
    with a parent_span_id or a link id that no OTLP decoder accepts (_related_ids_wellformed).

    Items of a shape with optional ids (log records) that carry a malformed one keep going
    without it, so that every record is valid OTLP (the OpenTelemetry Collector refuses a whole
    request with one bad id): a trace id that is neither empty nor valid is cleared with the span
    id (the record is then untraced), a span id neither empty nor 8 bytes is cleared; each is
    flagged with a bool attribute (ATTR_INVALID_TRACE_ID / ATTR_INVALID_SPAN_ID).
    """
    grouped: dict[int, Request] = {}
    rejected = rejected_span_id = rejected_related_id = cleared_trace_id = cleared_span_id = 0
    for resource_entry in getattr(request, shape.resources):
        for scope_entry in getattr(resource_entry, shape.scopes):
            by_partition: dict[int, list[Span | LogRecord]] = defaultdict(list)
            for item in getattr(scope_entry, shape.items):
                trace_valid = is_valid_trace_id(item.trace_id)
                if shape.span_id_required and trace_valid and not is_valid_span_id(item.span_id):
                    rejected += 1
                    rejected_span_id += 1
                    continue
                if trace_valid and isinstance(item, Span) and not _related_ids_wellformed(item):
                    rejected += 1
                    rejected_related_id += 1
                    continue
                if not trace_valid and untraced_partition is None:
                    rejected += 1
                    continue
                if not shape.span_id_required and item.trace_id and not trace_valid:
                    item = _without_ids(item, ATTR_INVALID_TRACE_ID, "trace_id", "span_id")
                    cleared_trace_id += 1
                elif not shape.span_id_required and not is_wellformed_span_id(item.span_id):
                    item = _without_ids(item, ATTR_INVALID_SPAN_ID, "span_id")
                    cleared_span_id += 1
                partition = (
                    partition_for_trace(item.trace_id, partitions) if trace_valid else untraced_partition
                )
                assert partition is not None  # rejected above
                by_partition[partition].append(item)
            for partition, kept in by_partition.items():
                target = grouped.setdefault(partition, type(request)())
                resources = getattr(target, shape.resources)
                if not resources or resources[-1].resource != resource_entry.resource:
                    resources.add(resource=resource_entry.resource, schema_url=resource_entry.schema_url)
                scopes = getattr(resources[-1], shape.scopes)
                if not scopes or scopes[-1].scope != scope_entry.scope:
                    scopes.add(scope=scope_entry.scope, schema_url=scope_entry.schema_url)
                getattr(scopes[-1], shape.items).extend(kept)
    return SplitResult(
        {p: r.SerializeToString() for p, r in grouped.items()},
        rejected,
        rejected_span_id=rejected_span_id,
        rejected_related_id=rejected_related_id,
        cleared_trace_id=cleared_trace_id,
        cleared_span_id=cleared_span_id,
    )


def _related_ids_wellformed(span: Span) -> bool:
    """The span's parent_span_id and its links' ids are empty or of their size: the OpenTelemetry
    Collector's decoder refuses a whole request holding another length."""
    return is_wellformed_span_id(span.parent_span_id) and all(
        is_wellformed_trace_id(link.trace_id) and is_wellformed_span_id(link.span_id) for link in span.links
    )


def _without_ids(item: Item, flag: str, *id_fields: str) -> Item:
    """A copy of `item` without `id_fields`, flagged `flag` = true (the request is left as it is)."""
    copy = type(item)()
    copy.CopyFrom(item)
    for name in id_fields:
        copy.ClearField(name)  # type: ignore[arg-type]
    copy.attributes.append(KeyValue(key=flag, value=AnyValue(bool_value=True)))
    return copy
