"""Span inference and repair: a line naming its trace but no span joined to the span of its service
that holds its timestamp (else the service's entry span, else the root), and indexed log documents
written again when a late span changes the answer."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tether.collector.correlate import Budget, Output, RepairBudget, Stats, TraceBuffer
from tether.collector.documents import LogDoc, SpanDoc, log_documents, span_documents
from tether.schemas.indices import LOGS_ALIAS, SPANS_ALIAS, TRACES_ALIAS
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import ATTR_AGENT_ID, ATTR_RECORD_ID, FILE_SCOPE

T0 = 1_704_164_645_000_000_000
MS = 1_000_000
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
WAIT = 5.0


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span(
    span_id: str, service: str, start_ms: int, end_ms: int, parent: str = "", *, error: bool = False
) -> SpanDoc:
    proto = Span(
        trace_id=TRACE,
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent),
        name=f"op-{span_id[:4]}",
        start_time_unix_nano=T0 + start_ms * MS,
        end_time_unix_nano=T0 + end_ms * MS,
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK),
    )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", service)]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="lib"), spans=[proto])],
            )
        ]
    )
    [doc] = span_documents(request)
    return doc


def line(rid: str, service: str, at_ms: int, *, level: str = "info", span_id: str = "") -> LogDoc:
    """A line in the seeds' format, as the agent encodes it: a trace id, no span id (unless given),
    the line's service as the resource's and its level as the severity."""
    body = {"level": level, "service": service, "trace_id": TRACE.hex(), "message": rid, "data": {"k": 1}}
    record = LogRecord(
        time_unix_nano=T0 + at_ms * MS,
        severity_text=level,
        body=AnyValue(string_value=orjson.dumps(body).decode()),
        trace_id=TRACE,
        span_id=bytes.fromhex(span_id),
        attributes=[kv(ATTR_RECORD_ID, rid)],
    )
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=[kv(ATTR_AGENT_ID, "agent"), kv("service.name", service)]),
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=FILE_SCOPE), log_records=[record])],
            )
        ]
    )
    [doc] = log_documents(request, default_mapping())
    return doc


# frontend: root 0-100 ms, calls checkout twice in parallel (10-60, 20-80); checkout's own child 30-40
ROOT = span("a000000000000001", "frontend", 0, 100)
CALL_1 = span("b000000000000001", "checkout", 10, 60, "a000000000000001")
CALL_2 = span("b000000000000002", "checkout", 20, 80, "a000000000000001")
INNER = span("c000000000000001", "checkout", 30, 40, "b000000000000001")


def emitted(
    spans: Sequence[SpanDoc], logs: Sequence[LogDoc], *, repair: int = 1000, skew_ms: float = 1
) -> tuple[TraceBuffer[int], dict[str, list[Output[int]]]]:
    buffer: TraceBuffer[int] = TraceBuffer(
        WAIT,
        Budget(100, 10**9),
        100,
        Stats(),
        partition=0,
        repair=RepairBudget(repair),
        inference_skew_ns=int(skew_ms * MS),
    )
    for doc in spans:
        buffer.add_span(doc, 0, 100, 0)
    for log_doc in logs:
        buffer.add_log(log_doc, 0, 100, 0)
    return buffer, grouped(buffer.due(WAIT + 1))


def grouped(outputs: list[Output[int]]) -> dict[str, list[Output[int]]]:
    by: dict[str, list[Output[int]]] = {SPANS_ALIAS: [], LOGS_ALIAS: [], TRACES_ALIAS: []}
    for output in outputs:
        by[output.alias].append(output)
    return by


def joins(outputs: list[Output[int]]) -> dict[str, tuple[str, str, str]]:
    """Each log document's (correlation, inference rule, span id)."""
    return {
        o.doc_id: (
            o.source["tether"]["correlation"],
            o.source["tether"].get("inference", ""),
            o.source.get("span", {}).get("id", ""),
        )
        for o in outputs
        if o.alias == LOGS_ALIAS
    }


def test_the_innermost_span_of_the_lines_service_holding_its_time() -> None:
    _, out = emitted(
        [ROOT, CALL_1, CALL_2, INNER],
        [
            line("in-inner", "checkout", 35),  # CALL_1, CALL_2 and INNER hold it: INNER is innermost
            line("parallel", "checkout", 50),  # CALL_1 and CALL_2 (parallel): the later started
            line("only-call-2", "checkout", 70),
            line("frontend", "frontend", 35),  # frontend's only span holds it
        ],
    )
    assert joins(out[LOGS_ALIAS]) == {
        "in-inner": ("inferred", "containing", "c000000000000001"),
        "parallel": ("inferred", "containing", "b000000000000002"),
        "only-call-2": ("inferred", "containing", "b000000000000002"),
        "frontend": ("inferred", "containing", "a000000000000001"),
    }
    inferred = next(o for o in out[LOGS_ALIAS] if o.doc_id == "in-inner").source
    assert inferred["span"]["name"] == "op-c000" and inferred["parent"] == {"id": "b000000000000001"}


def test_outside_every_span_of_its_service_the_entry_span_then_the_root() -> None:
    _, out = emitted(
        [ROOT, CALL_1, CALL_2, INNER],
        [
            line("after-calls", "checkout", 95),  # no checkout span holds it: the nearest entry
            line("before-calls", "checkout", 5),
            line("no-spans", "payments", 50),  # payments sent no span: the root
        ],
    )
    assert joins(out[LOGS_ALIAS]) == {
        "after-calls": ("inferred", "service_entry", "b000000000000002"),
        "before-calls": ("inferred", "service_entry", "b000000000000001"),
        "no-spans": ("inferred", "root", "a000000000000001"),
    }
    [summary] = out[TRACES_ALIAS]
    assert summary.source["trace"]["services_without_spans"] == ["payments"]


def test_clock_skew_within_the_configured_tolerance_still_contains() -> None:
    lines = [line("early", "checkout", 29)]  # a millisecond before INNER started
    _, out = emitted([ROOT, CALL_1, INNER], lines, skew_ms=0)
    assert joins(out[LOGS_ALIAS])["early"] == ("inferred", "containing", "b000000000000001")
    _, out = emitted([ROOT, CALL_1, INNER], [line("early", "checkout", 29)], skew_ms=2)
    assert joins(out[LOGS_ALIAS])["early"] == ("inferred", "containing", "c000000000000001")


def test_a_line_naming_its_span_is_never_inferred() -> None:
    _, out = emitted([ROOT], [line("named-missing", "frontend", 50, span_id="d000000000000001")])
    assert joins(out[LOGS_ALIAS]) == {"named-missing": ("trace", "", "d000000000000001")}


def test_a_late_span_rewrites_the_logs_whose_join_it_changes() -> None:
    buffer, out = emitted(
        [ROOT, CALL_1],
        [
            line("will-move", "checkout", 35),
            line("stays", "checkout", 15),
            line("named", "checkout", 35, span_id="c000000000000001"),
        ],
    )
    first = {o.doc_id: o for o in out[LOGS_ALIAS]}
    assert joins(out[LOGS_ALIAS]) == {
        "will-move": ("inferred", "containing", "b000000000000001"),
        "stays": ("inferred", "containing", "b000000000000001"),
        "named": ("trace", "", "c000000000000001"),
    }
    late = grouped(buffer.add_span(INNER, 7, 100, WAIT + 2))
    assert joins(late[LOGS_ALIAS]) == {
        "will-move": ("inferred", "containing", "c000000000000001"),
        "named": ("span", "", "c000000000000001"),
    }
    for repaired in late[LOGS_ALIAS]:  # outranks the first write, whatever order they land in
        assert repaired.version is not None and repaired.version > (first[repaired.doc_id].version or 0)
        assert repaired.ack is None  # the record was acknowledged with the first write
    [span_doc] = late[SPANS_ALIAS]
    assert span_doc.source["span"]["log_count"] == 2 and span_doc.ack == 7
    assert buffer.stats.logs_repaired == 2
    # the summary is written again at the next due, knowing four spans
    [summary] = buffer.due(WAIT + 3)
    assert summary.source["trace"]["span_count"] == 3


def test_a_full_repair_budget_counts_what_it_cannot_repair() -> None:
    buffer, _ = emitted([ROOT, CALL_1], [line("a", "checkout", 35), line("b", "checkout", 36)], repair=1)
    assert buffer.stats.logs_unrepairable == 1
    late = grouped(buffer.add_span(INNER, 7, 100, WAIT + 2))
    assert len(late[LOGS_ALIAS]) == 1


def test_spans_and_summaries_count_their_logs_by_level_and_the_worst() -> None:
    _, out = emitted(
        [ROOT, CALL_1, span("e000000000000001", "checkout", 10, 20, "a000000000000001", error=True)],
        [
            line("1", "checkout", 50, level="warn"),
            line("2", "checkout", 55, level="error"),
            line("3", "frontend", 90, level="info"),
        ],
    )
    spans = {o.doc_id.split("-")[1]: o.source["span"] for o in out[SPANS_ALIAS]}
    assert spans["b000000000000001"]["logs_by_level"] == {"warn": 1, "error": 1}
    assert spans["b000000000000001"]["worst_log_level"] == "error"
    assert spans["a000000000000001"]["log_count"] == 1
    assert "log_count" not in spans["e000000000000001"]
    [summary] = out[TRACES_ALIAS]
    assert summary.source["trace"]["worst_log_level"] == "error"
    assert summary.source["trace"]["orphan_span_count"] == 0


def test_summaries_name_spans_whose_parent_never_arrived() -> None:
    _, out = emitted([ROOT, INNER], [])
    [summary] = out[TRACES_ALIAS]
    assert summary.source["trace"]["orphan_span_count"] == 1
    assert summary.source["trace"]["orphan_spans"] == ["c000000000000001"]
