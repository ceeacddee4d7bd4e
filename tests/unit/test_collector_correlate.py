"""collector.correlate: traces held for their window, emitted whole, late arrivals repaired."""

from __future__ import annotations

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tether.collector.correlate import Budget, Output, RecentBudget, RepairBudget, Stats, TraceBuffer
from tether.collector.documents import LogDoc, SpanDoc, log_documents, span_documents
from tether.collector.trace_summary import SPAN_VERSION_SHIFT
from tether.schemas.indices import LOGS_ALIAS, SPANS_ALIAS, TRACES_ALIAS
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import ATTR_AGENT_ID, ATTR_RECORD_ID, FILE_SCOPE

T0 = 1_704_164_645_000_000_000
TRACE_A = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
TRACE_B = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
ROOT = bytes.fromhex("00f067aa0ba902b7")
CHILD = bytes.fromhex("b7ad6b7169203331")
OTHER = bytes.fromhex("1111111111111111")
WAIT = 5.0
NOW = 1000.0


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def spans(
    trace_id: bytes,
    span_id: bytes,
    *,
    parent: bytes = b"",
    service: str = "frontend",
    name: str = "GET /checkout",
    kind: int = Span.SPAN_KIND_SERVER,
    status: int = Status.STATUS_CODE_OK,
    duration_ns: int = 1_500_000,
) -> list[SpanDoc]:
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + duration_ns,
        status=Status(code=status),  # type: ignore[arg-type]
    )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", service)]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="lib"), spans=[span])],
            )
        ]
    )
    return span_documents(request)


def log(trace_id: bytes = b"", span_id: bytes = b"", *, service: str = "", rid: str = "agent:fp:0") -> LogDoc:
    body = orjson.dumps({"message": "hello", "level": "info"}).decode()
    record = LogRecord(
        time_unix_nano=T0,
        severity_text="info",
        severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
        body=AnyValue(string_value=body),
        trace_id=trace_id,
        span_id=span_id,
        attributes=[kv(ATTR_RECORD_ID, rid)],
    )
    resource = [kv(ATTR_AGENT_ID, "agent")] + ([kv("service.name", service)] if service else [])
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=resource),
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=FILE_SCOPE), log_records=[record])],
            )
        ]
    )
    [doc] = log_documents(request, default_mapping())
    return doc


def buffer(max_traces: int = 100, max_bytes: int = 10**9, recent: int = 100) -> TraceBuffer[int]:
    return TraceBuffer(
        wait_seconds=WAIT,
        budget=Budget(max_traces, max_bytes),
        max_recent_traces=recent,
        stats=Stats(),
        partition=0,
    )


def by_alias(outputs: list[Output[int]]) -> dict[str, list[Output[int]]]:
    grouped: dict[str, list[Output[int]]] = {}
    for output in outputs:
        grouped.setdefault(output.alias, []).append(output)
    return grouped


def test_untraced_log_is_emitted_at_once() -> None:
    b = buffer()
    [output] = b.add_log(log(), offset=17, size=10, now=NOW)
    assert output.alias == LOGS_ALIAS and output.ack == 17  # the record's acknowledgement, as given
    assert output.source["tether"]["correlation"] == "untraced"
    assert b.pending_traces == 0 and b.stats.logs_untraced == 1


def test_a_trace_is_held_for_its_window_then_emitted_whole() -> None:
    b = buffer()
    assert b.add_log(log(TRACE_A, CHILD, rid="a:f:1"), offset=3, size=10, now=NOW) == []
    assert b.add_span(spans(TRACE_A, ROOT, name="GET /checkout")[0], offset=8, size=10, now=NOW + 1) == []
    assert (
        b.add_span(
            spans(
                TRACE_A,
                CHILD,
                parent=ROOT,
                name="charge",
                kind=Span.SPAN_KIND_CLIENT,
                status=Status.STATUS_CODE_ERROR,
                duration_ns=2_345_678,
            )[0],
            offset=9,
            size=10,
            now=NOW + 2,
        )
        == []
    )
    assert b.due(NOW + WAIT - 0.01) == []  # the window counts from the trace's first item
    emitted = by_alias(b.due(NOW + WAIT))
    assert [o.ack for o in emitted[SPANS_ALIAS]] == [8, 9]
    [log_output] = emitted[LOGS_ALIAS]
    source = log_output.source
    assert log_output.ack == 3
    assert source["span"] == {
        "id": CHILD.hex(),
        "name": "charge",
        "kind": "client",
        "status": "ERROR",
        "duration": {"us": 2345},
    }
    assert source["parent"] == {"id": ROOT.hex()}
    assert source["service"]["name"] == "frontend"  # the line had none: taken from its span
    assert source["tether"]["correlation"] == "span"
    [summary] = emitted[TRACES_ALIAS]
    assert summary.doc_id == TRACE_A.hex() and summary.ack is None
    trace = summary.source["trace"]
    assert trace["root"] == {"service": "frontend", "operation": "GET /checkout"}
    assert (trace["span_count"], trace["error_count"], trace["log_count"]) == (2, 1, 1)
    assert trace["logs_by_level"] == {"info": 1} and trace["services"] == ["frontend"]
    assert trace["status"] == "ERROR" and trace["complete"] is True
    assert trace["duration"]["us"] == 2345  # both spans start at T0; the child ends last
    assert b.pending_traces == 0 and b.budget.traces == 0 and b.budget.bytes == 0


def test_correlation_results_without_the_span() -> None:
    b = buffer()
    b.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=1, now=NOW)
    b.add_log(log(TRACE_A, OTHER, rid="a:f:1"), offset=1, size=1, now=NOW)  # its span never came
    b.add_log(log(TRACE_B, OTHER, service="billing", rid="a:f:2"), offset=2, size=1, now=NOW)  # nothing came
    logs_out = {o.ack: o.source for o in b.due(NOW + WAIT) if o.alias == LOGS_ALIAS}
    assert logs_out[1]["tether"]["correlation"] == "trace"
    assert logs_out[1]["service"]["name"] == "frontend"  # from the trace's root
    assert logs_out[2]["tether"]["correlation"] == "none"
    assert logs_out[2]["service"]["name"] == "billing"  # its own is kept
    assert (b.stats.logs("trace"), b.stats.logs("none")) == (1, 1)


def test_late_span_and_late_log_update_the_summary_under_the_same_id() -> None:
    b = buffer()
    b.add_span(spans(TRACE_A, CHILD, parent=ROOT, name="charge")[0], offset=0, size=1, now=NOW)
    [first] = by_alias(b.due(NOW + WAIT))[TRACES_ALIAS]
    assert first.source["trace"]["complete"] is False  # no root yet: the earliest span stands in
    assert first.source["trace"]["root"]["operation"] == "charge"
    late = b.add_span(
        spans(TRACE_A, ROOT, name="GET /checkout", service="edge")[0], offset=1, size=1, now=NOW + 60
    )
    assert [o.ack for o in late] == [1]  # indexed at once, not held again
    [summary] = by_alias(b.due(NOW + 60))[TRACES_ALIAS]  # the summary is rewritten at the next due()
    assert summary.doc_id == first.doc_id and summary.timestamp_ns == first.timestamp_ns
    assert summary.source["trace"]["root"] == {"service": "edge", "operation": "GET /checkout"}
    assert summary.source["trace"]["span_count"] == 2 and summary.source["trace"]["complete"] is True
    late_log = by_alias(b.add_log(log(TRACE_A, ROOT, rid="a:f:9"), offset=5, size=1, now=NOW + 61))
    assert late_log[LOGS_ALIAS][0].source["span"]["name"] == "GET /checkout"
    assert TRACES_ALIAS not in late_log
    assert by_alias(b.due(NOW + 61))[TRACES_ALIAS][0].source["trace"]["log_count"] == 1
    assert (b.stats.late_spans, b.stats.late_logs) == (1, 1)
    assert b.due(NOW + 62) == []  # written once: nothing changed since


def test_many_late_items_rewrite_their_summary_once_per_due() -> None:
    b = buffer()
    b.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=1, now=NOW)
    b.add_span(spans(TRACE_B, ROOT)[0], offset=1, size=1, now=NOW)
    b.due(NOW + WAIT)
    for n in range(50):
        out = b.add_log(
            log(TRACE_A if n % 2 else TRACE_B, ROOT, rid=f"a:f:{n}"), offset=n, size=1, now=NOW + 9
        )
        assert [o.alias for o in out] == [LOGS_ALIAS]
    summaries = by_alias(b.due(NOW + 9))[TRACES_ALIAS]
    assert sorted(o.source["trace"]["log_count"] for o in summaries) == [25, 25]
    assert {o.doc_id for o in summaries} == {TRACE_A.hex(), TRACE_B.hex()}


def test_a_replayed_span_is_not_counted_twice() -> None:
    b = buffer()
    b.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=1, now=NOW)
    b.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=1, now=NOW)
    summary = by_alias(b.due(NOW + WAIT))[TRACES_ALIAS][0]
    assert summary.source["trace"]["span_count"] == 1


def test_the_budget_bounds_pending_traces_by_emitting_the_oldest_early() -> None:
    """Over the shared bound, the trace that waited longest is emitted, whichever partition holds
    it (each measured in its own partition's event time), not the newest of the partition adding."""
    budget = Budget(max_traces=3, max_bytes=10**9)
    first, second = (TraceBuffer(WAIT, budget, 100, Stats(), partition=p) for p in range(2))
    third, fourth = bytes.fromhex("22" * 16), bytes.fromhex("33" * 16)
    assert first.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=1, now=NOW) == []
    assert first.add_span(spans(third, ROOT)[0], offset=1, size=1, now=NOW + 3) == []  # A waited 3 s
    # The second partition is read far ahead of the first (a backlog): its trace waited 1 s.
    assert second.add_span(spans(TRACE_B, ROOT)[0], offset=0, size=1, now=NOW + 600) == []
    early = second.add_span(spans(fourth, ROOT)[0], offset=1, size=1, now=NOW + 601)  # 4 > 3: evict
    assert {o.source["trace"]["id"] for o in early} == {TRACE_A.hex()}
    assert (first.stats.evicted, second.stats.evicted, budget.traces) == (1, 0, 3)
    # A buffer whose partition is revoked leaves the budget, and gives back what it held.
    first.close()
    assert budget.buffers == [second] and budget.traces == 2
    byte_budget = Budget(max_traces=100, max_bytes=1000)
    b = TraceBuffer(WAIT, byte_budget, 100, Stats(), partition=0)
    b.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=600, now=NOW)
    evicted = b.add_span(spans(TRACE_B, ROOT)[0], offset=1, size=600, now=NOW)
    assert {o.source["trace"]["id"] for o in evicted} == {TRACE_A.hex()} and byte_budget.bytes == 600


def test_recent_traces_are_bounded() -> None:
    b = buffer(recent=1)
    b.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=1, now=NOW)
    b.add_span(spans(TRACE_B, ROOT)[0], offset=1, size=1, now=NOW)
    b.due(NOW + WAIT)
    # TRACE_A was forgotten: its late span is held again as a new trace, not an update.
    assert b.add_span(spans(TRACE_A, CHILD, parent=ROOT)[0], offset=2, size=1, now=NOW + 10) == []
    assert b.pending_traces == 1 and b.stats.late_spans == 0


def test_recent_traces_are_bounded_across_partitions() -> None:
    """The bound is the collector's: a collector given more partitions remembers no more."""
    shared, repair = RecentBudget(3), RepairBudget(100)
    first, second = (
        TraceBuffer(WAIT, Budget(100, 10**9), 0, Stats(), partition=p, recent=shared, repair=repair)
        for p in (0, 1)
    )
    trace_c, trace_d = bytes.fromhex("c" * 32), bytes.fromhex("d" * 32)
    for b, traces in ((first, (TRACE_A, TRACE_B)), (second, (trace_c, trace_d))):
        for trace_id in traces:
            b.add_span(spans(trace_id, ROOT)[0], offset=0, size=1, now=NOW)
        b.due(NOW + WAIT)
    assert shared.traces == 3
    # the partition that went over the bound forgot its own oldest; the other kept both
    assert second.add_span(spans(trace_c, CHILD, parent=ROOT)[0], offset=1, size=1, now=NOW + 6) == []
    assert second.stats.late_spans == 0 and second.pending_traces == 1
    late = first.add_span(spans(TRACE_A, CHILD, parent=ROOT)[0], offset=1, size=1, now=NOW + 6)
    assert [o.alias for o in late] == [SPANS_ALIAS] and first.stats.late_spans == 1


def test_a_revoked_partition_gives_its_recent_traces_and_kept_logs_back() -> None:
    shared, repair = RecentBudget(10), RepairBudget(10)
    b = TraceBuffer(WAIT, Budget(100, 10**9), 0, Stats(), partition=0, recent=shared, repair=repair)
    b.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=1, now=NOW)
    b.add_log(log(TRACE_A, OTHER, service="frontend", rid="a:f:1"), offset=1, size=1, now=NOW)  # kept
    b.due(NOW + WAIT)
    assert shared.traces == 1 and repair.logs == 1
    b.forget_recent()
    assert shared.traces == 0 and repair.logs == 0


def test_each_version_of_a_summary_carries_a_version_that_grows_with_what_it_knows() -> None:
    b = buffer()
    b.add_log(log(TRACE_A, ROOT, rid="a:f:1"), offset=0, size=1, now=NOW)
    [first] = by_alias(b.due(NOW + WAIT))[TRACES_ALIAS]
    assert first.version == 1
    b.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=1, now=NOW + 6)
    b.add_span(spans(TRACE_A, CHILD, parent=ROOT)[0], offset=1, size=1, now=NOW + 6)
    [second] = by_alias(b.due(NOW + 6))[TRACES_ALIAS]
    two_spans = 2 << SPAN_VERSION_SHIFT
    assert second.version == two_spans + 1 and second.doc_id == first.doc_id
    b.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=1, now=NOW + 7)  # a replayed span
    [again] = by_alias(b.due(NOW + 7))[TRACES_ALIAS]
    assert again.version == two_spans + 1 and again.source == second.source  # the same knowledge
    b.add_log(log(TRACE_A, CHILD, rid="a:f:2"), offset=1, size=1, now=NOW + 8)
    [third] = by_alias(b.due(NOW + 8))[TRACES_ALIAS]
    assert third.version == two_spans + 2
    # Other documents are not versioned.
    out = b.add_log(log(rid="a:f:3"), offset=2, size=1, now=NOW + 8)
    assert [o.version for o in out] == [None]


def test_a_summary_of_late_lines_alone_never_outranks_one_that_knew_spans() -> None:
    """The trace left the recent-trace cache; its late lines make a new summary of lines only,
    which must lose against the indexed one with the spans and root, however many lines."""
    knew_spans = buffer()
    knew_spans.add_span(spans(TRACE_A, ROOT)[0], offset=0, size=1, now=NOW)
    [indexed] = by_alias(knew_spans.due(NOW + WAIT))[TRACES_ALIAS]
    late = buffer()
    for n in range(50):
        late.add_log(log(TRACE_A, ROOT, rid=f"a:f:{n}"), offset=n, size=1, now=NOW + 60)
    [rebuilt] = by_alias(late.due(NOW + 60 + WAIT))[TRACES_ALIAS]
    assert rebuilt.doc_id == indexed.doc_id
    assert indexed.version is not None and rebuilt.version is not None
    assert rebuilt.version < indexed.version


def test_a_logs_only_summary_is_dated_from_its_earliest_log_and_keeps_that_day() -> None:
    b = buffer()
    later_log, earlier_log = log(TRACE_A, rid="a:f:1"), log(TRACE_A, rid="a:f:2")
    later_log.timestamp_ns, earlier_log.timestamp_ns = T0 + 5_000, T0 + 1_000
    b.add_log(later_log, offset=0, size=1, now=NOW)
    b.add_log(earlier_log, offset=1, size=1, now=NOW)
    [first] = by_alias(b.due(NOW + WAIT))[TRACES_ALIAS]
    assert first.timestamp_ns == T0 + 1_000  # not 0, which named the index tether-traces-1970.01.01
    assert first.source["@timestamp"] == "2024-01-02T03:04:05.000001000Z"
    next_day = spans(TRACE_A, ROOT)[0]
    next_day.timestamp_ns += 86_400 * 10**9
    b.add_span(next_day, offset=0, size=1, now=NOW + 6)
    [second] = by_alias(b.due(NOW + 6))[TRACES_ALIAS]
    assert second.timestamp_ns == first.timestamp_ns  # later versions overwrite the first, same index
