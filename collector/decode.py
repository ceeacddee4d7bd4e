"""Decoding Kafka records into documents, and the dead letter of a record that does not decode."""

from __future__ import annotations

import base64
import time
from collections import Counter

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tether.collector.correlate import Output
from tether.collector.documents import (
    LogDoc,
    SpanDoc,
    log_documents,
    native_log_documents,
    native_span_documents,
    span_documents,
)
from tether.collector.kafka import KafkaRecord
from tether.collector.offsets import RecordAck
from tether.collector.sinks.elasticsearch import deadletter_source
from tether.schemas.indices import DEADLETTER_ALIAS
from tether.schemas.log_fields import LogFieldMapping
from tether.schemas.records import Signal

# What a held document costs in memory beyond its share of the Kafka record: a decoded document
# is a tree of Python dicts and strings. tracemalloc measured 2.3-2.5 kB (issue 15), so the 64 MB
# pending budget holds ~75 MB; counting 2,560 took the backlog bench's live join rate from ~0.99
# to 0.91 (earlier evictions) and its replay peak only to 256 MB, so it stays 2,048 until held
# documents shrink (their dicts are kept until the bulk is acknowledged).
DOCUMENT_MEMORY_BYTES = 2048


def decode_spans(value: bytes, for_jaeger: bool) -> tuple[ExportTraceServiceRequest | None, list[SpanDoc]]:
    """A spans record: the export request (what Jaeger receives; None unless `for_jaeger`) and
    its span documents, natively when the request's values allow (else by the reference)."""
    docs = native_span_documents(value)
    if docs is None:
        request = ExportTraceServiceRequest.FromString(value)
        return request if for_jaeger else None, span_documents(request)
    return ExportTraceServiceRequest.FromString(value) if for_jaeger else None, docs


def decode_logs(value: bytes, mapping: LogFieldMapping, unparsed: Counter[str]) -> list[LogDoc]:
    """A logs record: lines read from files natively; anything else (or unusual) by the reference,
    which counts the lines it indexed as plain messages into `unparsed`."""
    native = native_log_documents(value, mapping)
    if native is not None:
        return native
    return log_documents(ExportLogsServiceRequest.FromString(value), mapping, unparsed)


def undecodable_letter(record: KafkaRecord, signal: Signal, error: str, ack: RecordAck) -> Output[RecordAck]:
    """The dead letter of a Kafka record that is no OTLP request: its bytes in base64, under an id
    of its topic, partition and offset (a replay writes the same letter again)."""
    now_ns = time.time_ns()
    doc_id = f"{record.topic}:{record.partition}:{record.offset}"
    source = deadletter_source(
        now_ns,
        index=record.topic,
        doc_id=doc_id,
        status=0,
        error_type="undecodable_record",
        reason=f"not an OTLP {'trace' if signal == 'spans' else 'logs'} export request: {error}",
        original=base64.b64encode(record.value or b"").decode(),
        encoding="base64",
    )
    return Output(DEADLETTER_ALIAS, doc_id, now_ns, source, ack)
