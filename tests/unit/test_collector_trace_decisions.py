"""What happens when a trace's window ends, through a Collector over fakes: its logs go to Jaeger as
events of their spans, and tail sampling keeps or drops the trace whole (spans to Elasticsearch and
Jaeger, logs, summary) while every record is still acknowledged and committed."""

from __future__ import annotations

import dataclasses
import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tests.unit.collector_fakes import (
    LOGS,
    SPANS,
    T0,
    FakeConsumer,
    FakeElasticsearch,
    FakeJaeger,
    Record,
    kv,
    log_record,
    poll,
    spin,
)
from tether.collector.config import CollectorConfig
from tether.collector.metrics import CollectorMetrics
from tether.collector.service import Collector
from tether.schemas.indices import LOGS_ALIAS, SPANS_ALIAS, TRACES_ALIAS


def settings(**sections: object) -> CollectorConfig:
    return CollectorConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": "kafka.invalid:9092", "logs_topic": LOGS, "spans_topic": SPANS},
            "correlation": {"wait_seconds": 0},
            **sections,
        }
    )


def spans_record(offset: int, *spans: tuple[bytes, bytes, bool]) -> Record:
    """One record of spans (trace id, span id, error?) of service checkout."""
    protos = [
        Span(
            trace_id=trace_id,
            span_id=span_id,
            name="GET /cart",
            start_time_unix_nano=T0 - 1_000_000,
            end_time_unix_nano=T0 + 1_000_000,
            status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK),
        )
        for trace_id, span_id, error in spans
    ]
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", "checkout")]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="lib"), spans=protos)],
            )
        ]
    )
    return Record(SPANS, 0, offset, request.SerializeToString())


def exported_spans(jaeger: FakeJaeger) -> dict[bytes, Span]:
    return {
        span.span_id: span
        for call in jaeger.calls
        for request in call.payload
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }


def on_time(record: Record, after_ms: int = 0) -> Record:
    """Sent when its items happened (T0), or `after_ms` later."""
    return dataclasses.replace(record, timestamp=T0 // 1_000_000 + after_ms)


async def run(c: Collector, consumer: FakeConsumer, *records: Record) -> None:
    consumer.polls.append(poll(*(r if r.timestamp else on_time(r) for r in records)))
    await c.poll()
    await spin()
    await c.poll()  # the commit after the deliveries were acknowledged
    await spin()


async def test_a_spans_logs_reach_jaeger_as_its_events_up_to_the_cap() -> None:
    consumer, es, jaeger = FakeConsumer(), FakeElasticsearch(), FakeJaeger()
    c = Collector(
        settings(jaeger={"max_log_events_per_span": 2}),
        consumer,
        es,
        jaeger,
        CollectorMetrics(),
        commit_interval=0,
    )
    trace, span, quiet = os.urandom(16), os.urandom(8), os.urandom(8)
    logs = [log_record(n, trace, span) for n in range(3)]
    await run(c, consumer, spans_record(0, (trace, span, False), (trace, quiet, False)), *logs)
    exported = exported_spans(jaeger)
    events = exported[span].events
    assert [e.name for e in events] == ["log", "log"] and exported[span].dropped_events_count == 1
    attributes = {kv.key: kv.value.string_value for kv in events[0].attributes}
    assert attributes["message"] == "hello" and attributes["tether.correlation"] == "span"
    assert events[0].time_unix_nano == T0
    assert list(exported[quiet].events) == []
    assert c.metrics.registry.get_sample_value("tether_collector_log_events_dropped_total") == 1
    span_docs = {o.doc_id: o.source for o in es.received if o.alias == SPANS_ALIAS}
    assert span_docs[f"{trace.hex()}-{span.hex()}"]["span"]["log_count"] == 3
    assert consumer.committed == {(SPANS, 0): 1, (LOGS, 0): 3}


async def test_sampling_keeps_or_drops_each_trace_whole_and_commits_everything() -> None:
    consumer, es, jaeger = FakeConsumer(), FakeElasticsearch(), FakeJaeger()
    sampling = {"enabled": True, "probability": 0.0}  # keep errors only
    c = Collector(settings(sampling=sampling), consumer, es, jaeger, CollectorMetrics(), commit_interval=0)
    kept_trace, kept_span = os.urandom(16), os.urandom(8)
    dropped_trace, dropped_span = os.urandom(16), os.urandom(8)
    await run(
        c,
        consumer,
        spans_record(0, (kept_trace, kept_span, True), (dropped_trace, dropped_span, False)),
        log_record(0, kept_trace, kept_span),
        log_record(1, dropped_trace, dropped_span),
        log_record(2),  # untraced: never sampled away
    )
    indexed = {(o.alias, o.doc_id): o.source for o in es.received}
    assert set(indexed) == {
        (SPANS_ALIAS, f"{kept_trace.hex()}-{kept_span.hex()}"),
        (LOGS_ALIAS, "agent:fp:0"),
        (LOGS_ALIAS, "agent:fp:2"),
        (TRACES_ALIAS, kept_trace.hex()),
    }
    for key in [(SPANS_ALIAS, f"{kept_trace.hex()}-{kept_span.hex()}"), (LOGS_ALIAS, "agent:fp:0")]:
        assert indexed[key]["tether"]["sampling"] == {"policy": "error_span"}
    assert indexed[(TRACES_ALIAS, kept_trace.hex())]["tether"]["sampling"] == {"policy": "error_span"}
    assert set(exported_spans(jaeger)) == {kept_span}
    assert consumer.committed == {(SPANS, 0): 1, (LOGS, 0): 3}  # dropped parts are acknowledged too
    sample = c.metrics.registry.get_sample_value
    dropped = {"decision": "drop", "policy": "probability", "service": "checkout"}
    assert sample("tether_collector_sampled_traces_total", dropped) == 1
    assert sample("tether_collector_sampled_items_total", {**dropped, "kind": "logs"}) == 1

    # late items follow the remembered decision
    await run(c, consumer, log_record(3, dropped_trace, dropped_span), log_record(4, kept_trace, kept_span))
    writes = [(o.alias, o.doc_id) for o in es.received]
    assert len(writes) == len(indexed) + 2  # the kept trace's late log, and its summary again
    assert writes[-2:] in (
        [(LOGS_ALIAS, "agent:fp:4"), (TRACES_ALIAS, kept_trace.hex())],
        [(TRACES_ALIAS, kept_trace.hex()), (LOGS_ALIAS, "agent:fp:4")],
    )
    assert consumer.committed == {(SPANS, 0): 1, (LOGS, 0): 5}


async def test_a_record_whose_spans_were_all_dropped_is_committed_without_an_export() -> None:
    consumer, es, jaeger = FakeConsumer(), FakeElasticsearch(), FakeJaeger()
    sampling = {"enabled": True, "probability": 0.0}
    c = Collector(settings(sampling=sampling), consumer, es, jaeger, CollectorMetrics(), commit_interval=0)
    await run(c, consumer, spans_record(0, (os.urandom(16), os.urandom(8), False)))
    assert jaeger.calls == [] and es.received == []
    assert consumer.committed == {(SPANS, 0): 1}


async def test_a_trace_first_seen_long_after_it_happened_is_kept_as_unknown() -> None:
    """Its items were sent a minute after they happened: most likely the late tail of a trace decided
    before (forgotten, or before a restart), so sampling keeps it rather than lose a kept trace's end."""
    consumer, es, jaeger = FakeConsumer(), FakeElasticsearch(), FakeJaeger()
    sampling = {"enabled": True, "probability": 0.0}
    c = Collector(settings(sampling=sampling), consumer, es, jaeger, CollectorMetrics(), commit_interval=0)
    late_trace, late_span = os.urandom(16), os.urandom(8)
    await run(
        c,
        consumer,
        on_time(spans_record(0, (late_trace, late_span, False)), after_ms=60_000),
        on_time(spans_record(1, (os.urandom(16), os.urandom(8), False)), after_ms=2_000),  # on time
    )
    kept = {(o.alias, o.doc_id): o.source for o in es.received}
    assert set(kept) == {
        (SPANS_ALIAS, f"{late_trace.hex()}-{late_span.hex()}"),
        (TRACES_ALIAS, late_trace.hex()),
    }
    assert all(source["tether"]["sampling"] == {"policy": "unknown_trace"} for source in kept.values())
    assert set(exported_spans(jaeger)) == {late_span}
