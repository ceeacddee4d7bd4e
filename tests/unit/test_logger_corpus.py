"""Every line of the logger corpus (tests/data/loggers: lines written by the real libraries) through
the agent's two encoders and the collector's two document builders, against its expected fields:
the timestamp, the level, the message, the trace and span ids and the service, with no
configuration. A field the line does not have is absent from the document, not an empty string."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.logger_corpus import expected_of, libraries, lines_of
from tether.agent.chunks import ChunkEncoder, NativeChunkEncoder, PythonChunkEncoder
from tether.collector.documents import LogDoc, log_documents, native_log_documents
from tether.schemas.log_fields import default_mapping, severity_name
from tether.schemas.records import ATTR_PARSE_ERROR, ATTR_RECORD_OFFSET, ATTR_SERVICE_NAME

OBSERVED_NS = 1_900_000_000_000_000_000  # the arrival time, later than every corpus line


def encoders() -> list[ChunkEncoder]:
    common: dict[str, Any] = {
        "agent_id": "agent-1",
        "partitions": 1,
        "mapping": default_mapping(),
        "max_line_bytes": 1 << 20,
    }
    return [PythonChunkEncoder(**common), NativeChunkEncoder(**common)]


def encoded(encoder: ChunkEncoder, library: str) -> bytes:
    data = lines_of(library)
    chunk = encoder.encode(
        data,
        0,
        fingerprint="fp",
        path=f"/var/log/{library}.log",
        untraced_partition=0,
        observed_ns=OBSERVED_NS,
    )
    assert chunk.parse_errors == 0
    [value] = chunk.records.values()  # one partition
    return value


def in_file_order(value: bytes) -> Iterator[tuple[str, Any]]:
    """(service, log record) of a request, in the order of the lines in their file."""
    request = ExportLogsServiceRequest.FromString(value)
    rows = []
    for resource_logs in request.resource_logs:
        attributes = {kv.key: kv.value.string_value for kv in resource_logs.resource.attributes}
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                offset = next(kv.value.int_value for kv in record.attributes if kv.key == ATTR_RECORD_OFFSET)
                rows.append((offset, attributes.get(ATTR_SERVICE_NAME, ""), record))
    return ((service, record) for _, service, record in sorted(rows, key=lambda row: row[0]))


@pytest.mark.parametrize("encoder", encoders(), ids=lambda e: e.name)
@pytest.mark.parametrize("library", libraries())
def test_agent_reads_each_line(library: str, encoder: ChunkEncoder) -> None:
    expected = expected_of(library)
    records = list(in_file_order(encoded(encoder, library)))
    assert len(records) == len(expected)
    for number, ((service, record), want) in enumerate(zip(records, expected, strict=True), 1):
        where = f"{library}.jsonl line {number}"
        assert not any(kv.key == ATTR_PARSE_ERROR for kv in record.attributes), where
        if want["keys"]["time"] is None:  # the library wrote no time: the arrival time
            assert record.time_unix_nano == OBSERVED_NS, where
        else:
            assert want["time_min_ns"] <= record.time_unix_nano <= want["time_max_ns"], where
        assert severity_name(record.severity_number) == want["level"], where
        assert record.trace_id.hex() == (want["trace_id"] or ""), where
        assert record.span_id.hex() == (want["span_id"] or ""), where
        assert service == (want["service"] or ""), where


def documents(value: bytes, native: bool) -> list[LogDoc]:
    if native:
        docs = native_log_documents(value, default_mapping())
        if docs is not None:
            return docs
    return log_documents(ExportLogsServiceRequest.FromString(value), default_mapping())


def source_of(doc: LogDoc) -> dict[str, Any]:
    """The document as built, before correlation (which writes a traced line's `span`): the
    native path's encoded head and its source."""
    if doc.head is None:
        return doc.source
    return {**json.loads(doc.head[:-1] + b"}"), **doc.source}


@pytest.mark.parametrize("native", [False, True], ids=["python", "native"])
@pytest.mark.parametrize("library", libraries())
def test_collector_indexes_each_line(library: str, native: bool) -> None:
    expected = expected_of(library)
    value = encoded(encoders()[1], library)
    docs = sorted(documents(value, native), key=lambda d: int(d.doc_id.rsplit(":", 1)[1]))
    assert len(docs) == len(expected)
    for number, (doc, want) in enumerate(zip(docs, expected, strict=True), 1):
        where = f"{library}.jsonl line {number}"
        source = source_of(doc)
        assert source["message"] == want["message"], where
        assert source["log"].get("level") == want["level"], where
        assert source["tether"]["parse_error"] is False, where
        assert source.get("trace", {}).get("id") == want["trace_id"], where
        assert (doc.span_id or None) == want["span_id"], where
        if not doc.trace_id:  # correlation leaves an untraced line's span as built
            assert source.get("span", {}).get("id") == want["span_id"], where
        assert source.get("service", {}).get("name") == want["service"], where
        assert "" not in (source.get("service", {}).get("name"), source["log"].get("level")), where
