"""Versions of one trace summary reaching the real Elasticsearch in any order.

Deliveries run concurrently (`max_concurrent_bulks`) and retry, so an older version of a summary
can be indexed after a newer one: these tests index them in exactly that order. Elasticsearch must
keep the version that knew most, also against a summary rebuilt from a partial replay.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tether.collector.config import ElasticsearchSinkConfig
from tether.collector.correlate import Budget, Output, Stats, TraceBuffer
from tether.collector.documents import LogDoc, SpanDoc, log_documents, span_documents
from tether.collector.metrics import CollectorMetrics
from tether.collector.sinks.elasticsearch import ElasticsearchSink
from tether.schemas.indices import TRACES_ALIAS, daily_index
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import ATTR_RECORD_ID, FILE_SCOPE
from tether.stack import Stack

pytestmark = pytest.mark.stack

WAIT = 5.0
NOW = 1000.0
T0 = time.time_ns() - 3_600 * 1_000_000_000


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _span(trace_id: bytes, span_id: bytes, parent: bytes = b"", start: int = T0) -> SpanDoc:
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name="GET /checkout" if not parent else "charge",
        start_time_unix_nano=start,
        end_time_unix_nano=start + 2_000_000,
    )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_kv("service.name", "checkout")]),
                scope_spans=[ScopeSpans(spans=[span])],
            )
        ]
    )
    [doc] = span_documents(request)
    return doc


def _log(trace_id: bytes, n: int, at: int) -> LogDoc:
    record = LogRecord(
        time_unix_nano=at,
        severity_text="info",
        body=AnyValue(string_value=f'{{"message":"log {n}","level":"info"}}'),
        trace_id=trace_id,
        attributes=[_kv(ATTR_RECORD_ID, f"summaries:{trace_id.hex()}:{n}")],
    )
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=FILE_SCOPE), log_records=[record])]
            )
        ]
    )
    [doc] = log_documents(request, default_mapping())
    return doc


def _buffer() -> TraceBuffer:
    return TraceBuffer(WAIT, Budget(100, 10**9), 100, Stats(), partition=0)


def _summary(outputs: list[Output]) -> Output:
    [summary] = [o for o in outputs if o.alias == TRACES_ALIAS]
    return summary


async def _indexed(stack: Stack, trace_id: str) -> list[dict[str, Any]]:
    es = AsyncElasticsearch(stack.elasticsearch.url)
    try:
        await es.indices.refresh(index=TRACES_ALIAS)
        response = await es.search(index=TRACES_ALIAS, query={"term": {"trace.id": trace_id}})
        return list(response["hits"]["hits"])
    finally:
        await es.close()


async def test_an_older_summary_indexed_after_a_newer_one_does_not_overwrite_it(stack: Stack) -> None:
    metrics = CollectorMetrics()
    sink = ElasticsearchSink(ElasticsearchSinkConfig(url=stack.elasticsearch.url, replicas=0), metrics)
    trace, root, child = os.urandom(16), os.urandom(8), os.urandom(8)
    try:
        await sink.install_templates()
        b = _buffer()
        # Its logs come first, and the window ends before any span: a logs-only summary.
        b.add_log(_log(trace, 0, T0 + 5_000), offset=0, size=1, now=NOW)
        b.add_log(_log(trace, 1, T0 + 9_000), offset=1, size=1, now=NOW)
        logs_only = _summary(b.due(NOW + WAIT))
        assert logs_only.source["trace"]["span_count"] == 0
        # Its spans arrive late: the summary is written again, knowing more.
        b.add_span(_span(trace, root), offset=0, size=1, now=NOW + 10)
        b.add_span(_span(trace, child, parent=root), offset=1, size=1, now=NOW + 10)
        with_spans = _summary(b.due(NOW + 10))
        assert with_spans.doc_id == logs_only.doc_id and with_spans.source["trace"]["span_count"] == 2

        # Two deliveries in flight: the newer one is acknowledged first.
        assert await sink.index([with_spans]) == []
        assert await sink.index([logs_only]) == []  # not a rejection, so not a dead letter
        [hit] = await _indexed(stack, trace.hex())
        assert hit["_source"]["trace"]["span_count"] == 2, hit
        assert hit["_source"]["trace"]["log_count"] == 2
        assert metrics.superseded.labels(TRACES_ALIAS)._value.get() == 1

        # After a restart the replay starts past the logs: a partial rebuild must not win either.
        replayed = _buffer()
        replayed.add_span(_span(trace, child, parent=root), offset=1, size=1, now=NOW)
        partial = _summary(replayed.due(NOW + WAIT))
        assert partial.source["trace"]["span_count"] == 1
        assert await sink.index([partial]) == []
        [hit] = await _indexed(stack, trace.hex())
        assert (hit["_source"]["trace"]["span_count"], hit["_source"]["trace"]["log_count"]) == (2, 2)
        assert metrics.superseded.labels(TRACES_ALIAS)._value.get() == 2

        # The same knowledge written again (a replay of everything) is accepted as it is.
        assert await sink.index([with_spans]) == []
        assert metrics.superseded.labels(TRACES_ALIAS)._value.get() == 2
    finally:
        await sink.close()


async def test_a_logs_only_summary_is_indexed_on_the_day_of_its_earliest_log(stack: Stack) -> None:
    metrics = CollectorMetrics()
    sink = ElasticsearchSink(ElasticsearchSinkConfig(url=stack.elasticsearch.url, replicas=0), metrics)
    trace, root = os.urandom(16), os.urandom(8)
    try:
        await sink.install_templates()
        b = _buffer()
        b.add_log(_log(trace, 0, T0 + 7_000), offset=0, size=1, now=NOW)
        b.add_log(_log(trace, 1, T0), offset=1, size=1, now=NOW)
        first = _summary(b.due(NOW + WAIT))
        b.add_span(_span(trace, root, start=T0 + 86_400 * 10**9), offset=0, size=1, now=NOW + 10)
        later = _summary(b.due(NOW + 10))  # its span starts a day later: the same index still
        assert await sink.index([first]) == [] and await sink.index([later]) == []
        [hit] = await _indexed(stack, trace.hex())
        assert hit["_index"] == daily_index(TRACES_ALIAS, T0)
        assert hit["_source"]["trace"]["span_count"] == 1
    finally:
        await sink.close()
