"""Splitting an OTLP export request given as protobuf bytes into per-partition request bytes.

The native path (tether_fastlog.split_traces / split_logs) works on the wire format and never
builds span or log record objects; the fallback decodes with the protobuf classes and runs the
reference, agent.encode.split_request. Both accept and refuse the same bodies:

- what python protobuf would not decode raises ValueError (invalid UTF-8 in a string field,
  nesting deeper than 100 included), so nothing the collector cannot decode reaches Kafka;
- stricter than the decoder: a wrong wire type for a field the split reads (request.resource_x,
  ResourceX.resource / scope_x / schema_url, ScopeX.scope / items / schema_url, the item's
  trace_id and span_id, a span's parent_span_id and links) raises ValueError instead of becoming
  an unknown field;
- spans without a valid trace id, or with one but without a valid span id (8 bytes, not all
  zero), are rejected and counted (`rejected`; the latter also in `rejected_span_id`), and so
  are spans with a parent_span_id or a link's span_id neither empty nor 8 bytes, or a link's
  trace_id neither empty nor 16 bytes (also in `rejected_related_id`); a log record's span_id is
  optional;
- log records with a malformed trace id (neither empty nor valid) lose it and their span id,
  those with a span id neither empty nor 8 bytes lose that, and are flagged (an attribute) and
  counted (`cleared_trace_id`, `cleared_span_id`): every record written is valid OTLP;
- unknown fields of the request, ResourceX and ScopeX are dropped; those inside resources,
  scopes and items are kept.

A known gap of the native path: it copies items as sent, so an item that repeats an id field
(no encoder does) keeps the earlier occurrences, which the reference drops on re-encoding; an
earlier one of a malformed length makes the record one the OpenTelemetry Collector refuses.

One difference: the native path groups consecutive items under one ResourceX / ScopeX when
their resource / scope *bytes* are equal, the reference when the *messages* are equal. They
agree for any canonical encoder; otherwise the native output may repeat a resource, with the
same items in the same partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tether import native
from tether.agent.encode import LOGS, TRACES, OtlpShape, Request, SplitResult, split_request

_native: Any = native.extension() if native.choose("otlp_split").native else None


@dataclass(frozen=True, slots=True)
class CountedSplit(SplitResult):
    """A SplitResult with the number of items in the request (rejected ones included)."""

    total: int


def native_available() -> bool:
    return _native is not None


def split_traces_bytes(body: bytes, partitions: int) -> CountedSplit:
    """Spans without a valid trace id or span id are rejected (counted)."""
    _check_partitions(partitions, 0)
    if _native is None:
        return reference_split_traces_bytes(body, partitions)
    records, total, rejected, rejected_span_id, rejected_related_id = _native.split_traces(body, partitions)
    return CountedSplit(
        records, rejected, total, rejected_span_id=rejected_span_id, rejected_related_id=rejected_related_id
    )


def split_logs_bytes(body: bytes, partitions: int, untraced_partition: int) -> CountedSplit:
    """Log records without a valid trace id go to `untraced_partition`; malformed ids are
    cleared (counted)."""
    _check_partitions(partitions, untraced_partition)
    if _native is None:
        return reference_split_logs_bytes(body, partitions, untraced_partition)
    records, total, cleared_trace_id, cleared_span_id = _native.split_logs(
        body, partitions, untraced_partition
    )
    return CountedSplit(records, 0, total, cleared_trace_id=cleared_trace_id, cleared_span_id=cleared_span_id)


def reference_split_traces_bytes(body: bytes, partitions: int) -> CountedSplit:
    _check_partitions(partitions, 0)
    return _reference(ExportTraceServiceRequest(), body, TRACES, partitions, None, id_fields={1, 2, 4, 13})


def reference_split_logs_bytes(body: bytes, partitions: int, untraced_partition: int) -> CountedSplit:
    _check_partitions(partitions, untraced_partition)
    return _reference(
        ExportLogsServiceRequest(), body, LOGS, partitions, untraced_partition, id_fields={9, 10}
    )


def _check_partitions(partitions: int, untraced_partition: int) -> None:
    if partitions <= 0:
        raise ValueError(f"partitions must be > 0, not {partitions}")
    if not 0 <= untraced_partition < partitions:
        raise ValueError(f"untraced_partition {untraced_partition} is not in [0, {partitions})")


def _reference(
    request: Request,
    body: bytes,
    shape: OtlpShape,
    partitions: int,
    untraced_partition: int | None,
    id_fields: set[int],
) -> CountedSplit:
    kind = type(request).__name__
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise ValueError(f"invalid {kind}: {error}") from error
    total = 0
    _wire_types(request, kind, shape.resources, {1})
    for resource_entry in getattr(request, shape.resources):
        _wire_types(resource_entry, kind, "resource", {1, 2, 3})
        for scope_entry in getattr(resource_entry, shape.scopes):
            _wire_types(scope_entry, kind, "scope", {1, 2, 3})
            items = getattr(scope_entry, shape.items)
            total += len(items)
            for item in items:
                _wire_types(item, kind, "item", id_fields)
    split = split_request(request, shape, partitions, untraced_partition)
    return CountedSplit(
        split.records,
        split.rejected,
        total,
        rejected_span_id=split.rejected_span_id,
        rejected_related_id=split.rejected_related_id,
        cleared_trace_id=split.cleared_trace_id,
        cleared_span_id=split.cleared_span_id,
    )


def _wire_types(message: ProtoMessage, kind: str, where: str, numbers: set[int]) -> None:
    """The decoder keeps a known field with the wrong wire type as an unknown field."""
    unknown = UnknownFieldSet(message)
    for index in range(len(unknown)):
        field = unknown[index]
        if field.field_number in numbers:
            raise ValueError(
                f"invalid {kind}: field {field.field_number} of {type(message).__name__} "
                f"({where} level) has wire type {field.wire_type}"
            )
