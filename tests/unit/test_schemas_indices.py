"""schemas.indices: the Elasticsearch templates and daily index names."""

from __future__ import annotations

import calendar
import time
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tether.collector.correlate import Budget, Stats, TraceBuffer
from tether.collector.documents import log_documents, span_documents
from tether.schemas.indices import (
    DEADLETTER_ALIAS,
    LOGS_ALIAS,
    SPANS_ALIAS,
    TEMPLATE_NAMES,
    TRACES_ALIAS,
    daily_index,
    index_template,
)
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import ATTR_FILE_PATH, ATTR_RECORD_ID, FILE_SCOPE

NS = 1_000_000_000


def utc_ns(*fields: int) -> int:
    return calendar.timegm((*fields, 0, 0, 0)) * NS


def test_template_names() -> None:
    assert (
        set(TEMPLATE_NAMES)
        == {LOGS_ALIAS, SPANS_ALIAS, TRACES_ALIAS, DEADLETTER_ALIAS}
        == {"tether-logs", "tether-spans", "tether-traces", "tether-deadletter"}
    )


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_index_template_parses_and_has_its_alias(name: str) -> None:
    template = index_template(name)
    assert isinstance(template, dict)
    assert template["index_patterns"] == [f"{name}-*"]
    assert name in template["template"]["aliases"]
    properties = template["template"]["mappings"]["properties"]
    if name == DEADLETTER_ALIAS:  # when it was refused, what, why, and the original as text
        assert properties["@timestamp"]["type"] == "date"
        assert set(properties["deadletter"]["properties"]) >= {"index", "id", "status", "reason", "original"}
    else:
        assert properties["@timestamp"]["type"] == "date_nanos"
        assert properties["trace"]["properties"]["id"]["type"] == "keyword"
    # The daily index of this alias matches the template's pattern.
    index = daily_index(name, utc_ns(2024, 1, 2, 3, 4, 5))
    assert index.startswith(template["index_patterns"][0].removesuffix("*"))


def _unmapped(source: dict[str, Any], properties: dict[str, Any], prefix: str = "") -> list[str]:
    """Field paths of `source` the mapping does not know (the templates use dynamic: false)."""
    missing = []
    for key, value in source.items():
        field = properties.get(key)
        if field is None:
            missing.append(prefix + key)
        elif isinstance(value, dict) and "properties" in field:
            missing += _unmapped(value, field["properties"], f"{prefix}{key}.")
    return missing


def test_documents_only_use_mapped_fields() -> None:
    trace_id, span_id, parent_id = bytes(range(1, 17)), bytes(range(1, 9)), bytes(range(9, 17))
    service = [KeyValue(key="service.name", value=AnyValue(string_value="checkout"))]
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_id,
        name="GET /",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=utc_ns(2024, 1, 2, 3, 4, 5),
        end_time_unix_nano=utc_ns(2024, 1, 2, 3, 4, 6),
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
        events=[Span.Event(name="e", time_unix_nano=utc_ns(2024, 1, 2, 3, 4, 5))],
    )
    spans = span_documents(
        ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(attributes=service),
                    scope_spans=[ScopeSpans(scope=InstrumentationScope(name="s", version="1"), spans=[span])],
                )
            ]
        )
    )
    body = '{"@timestamp":"2024-01-02T03:04:05Z","level":"info","message":"m","data":{"k":1},"u":2}'
    record = LogRecord(
        time_unix_nano=utc_ns(2024, 1, 2, 3, 4, 5),
        severity_text="info",
        severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
        body=AnyValue(string_value=body),
        trace_id=trace_id,
        span_id=span_id,
        attributes=[
            KeyValue(key=ATTR_RECORD_ID, value=AnyValue(string_value="a:f:0")),
            KeyValue(key=ATTR_FILE_PATH, value=AnyValue(string_value="/x.log")),
            KeyValue(key="other", value=AnyValue(string_value="v")),
        ],
    )
    logs = log_documents(
        ExportLogsServiceRequest(
            resource_logs=[
                ResourceLogs(
                    resource=Resource(attributes=service),
                    scope_logs=[ScopeLogs(scope=InstrumentationScope(name=FILE_SCOPE), log_records=[record])],
                )
            ]
        ),
        default_mapping(),
    )
    buffer = TraceBuffer(
        wait_seconds=1, budget=Budget(10, 10**6), max_recent_traces=10, stats=Stats(), partition=0
    )
    buffer.add_span(spans[0], offset=0, size=100, now=0)
    buffer.add_log(logs[0], offset=0, size=100, now=0)
    emitted = {output.alias: output.source for output in buffer.due(now=5)}
    assert emitted[LOGS_ALIAS]["tether"]["correlation"] == "span"
    for alias in (SPANS_ALIAS, LOGS_ALIAS, TRACES_ALIAS):
        properties = index_template(alias)["template"]["mappings"]["properties"]
        assert _unmapped(emitted[alias], properties) == [], alias


@pytest.mark.parametrize(
    ("timestamp_ns", "day"),
    [
        (0, "1970.01.01"),
        (utc_ns(2024, 1, 2, 3, 4, 5), "2024.01.02"),
        (utc_ns(2024, 1, 2, 0, 0, 0), "2024.01.02"),
        (utc_ns(2024, 1, 3, 0, 0, 0) - 1, "2024.01.02"),
        (utc_ns(2024, 1, 3, 0, 0, 0), "2024.01.03"),
        (utc_ns(2024, 2, 29, 12, 0, 0), "2024.02.29"),
        (utc_ns(2023, 12, 31, 23, 59, 59) + NS - 1, "2023.12.31"),
        (utc_ns(2038, 1, 19, 3, 14, 8), "2038.01.19"),
    ],
)
def test_daily_index_is_the_utc_day(timestamp_ns: int, day: str) -> None:
    assert daily_index(LOGS_ALIAS, timestamp_ns) == f"tether-logs-{day}"
    assert daily_index(SPANS_ALIAS, timestamp_ns) == f"tether-spans-{day}"


def test_daily_index_ignores_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # 23:30 UTC is already the next day at UTC+14 and 23:30 is still the same day at UTC-12.
    late = utc_ns(2024, 6, 30, 23, 30, 0)
    early = utc_ns(2024, 7, 1, 0, 30, 0)
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "UTC"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        try:
            assert daily_index(LOGS_ALIAS, late) == "tether-logs-2024.06.30"
            assert daily_index(LOGS_ALIAS, early) == "tether-logs-2024.07.01"
        finally:
            monkeypatch.undo()
            time.tzset()
