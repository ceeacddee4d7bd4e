"""Interop: what the agent writes to Kafka is OTLP that another consumer reads with every id intact.

A real `tether agent` tails a file of JSON log lines and takes spans from the OpenTelemetry SDK's
own OTLP/gRPC exporter, into Kafka topics on the open stack. The OpenTelemetry Collector (built by
bench/peers/build_otelcol.sh from the Go module proxy; a first build takes a while, then it is
cached) reads both topics with its kafka receiver (encoding otlp_proto, as a user would set it) and
writes what it decoded back as OTLP JSON (its kafka exporter, otlp_json: the pdata JSON marshaller,
as its file exporter writes). Every record must decode, and every log record's and span's ids,
times and severities must equal what the application sent. Only OTLP fields are compared, not the
log body: which JSON keys stay in the body is the agent's business.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.e2e.agent_harness import PARTITIONS, AgentProcess, consume_all, free_port
from tests.e2e.otelcol_harness import OtelcolProcess, otelcol_binary, peer_configs
from tether.stack import Stack
from tether.stack.kafka import ensure_topics

pytestmark = pytest.mark.stack

TRACES = 30
LOGS_PER_SPAN = 2
# OpenTelemetry's SeverityNumber of each level the lines use (the first of its range).
LEVELS = {"debug": 5, "info": 9, "warn": 13, "error": 17}

# (service, trace id, span id, time, severity number, severity text): hex ids, "" where none.
LogKey = tuple[str, str, str, int, int, str]
# (service, trace id, span id, parent span id, name, kind, start, end, status code)
SpanKey = tuple[str, str, str, str, str, int, int, int, int]


def _iso(ns: int) -> str:
    """RFC 3339 with all nine digits, so the agent's time_unix_nano can be compared exactly."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 10**9:09d}Z"


def _generate(endpoint: str, log_path: Path, run: str) -> tuple[list[LogKey], list[SpanKey]]:
    """Spans through the SDK's OTLP/gRPC exporter (and a copy in memory: what was sent), and log
    lines carrying their ids, each at a time of its own."""
    memory = InMemorySpanExporter()
    providers = {}
    for service in ("checkout", "payments"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        providers[service] = provider
    logs: list[LogKey] = []
    clock = time.time_ns()
    with log_path.open("a") as handle:

        def log(service: str, trace_id: str, span_id: str) -> None:
            nonlocal clock
            clock += 1_001  # distinct times: the line's key when matching
            level = list(LEVELS)[len(logs) % len(LEVELS)]
            line: dict[str, Any] = {"@timestamp": _iso(clock), "level": level, "service": service}
            if trace_id:
                line |= {"trace_id": trace_id, "span_id": span_id}
            line["message"] = f"{run} line {len(logs)}"
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            logs.append((service, trace_id, span_id, clock, LEVELS[level], level))

        for t in range(TRACES):
            service = "checkout" if t % 2 == 0 else "payments"
            tracer = providers[service].get_tracer("tether.e2e.interop")
            with tracer.start_as_current_span(f"{run} request {t}", kind=SpanKind.SERVER) as root:
                for c, kind in enumerate((SpanKind.INTERNAL, SpanKind.CLIENT)):
                    with tracer.start_as_current_span(f"{run} step {t}.{c}", kind=kind) as child:
                        if t % 3 == 0 and c == 1:
                            child.set_status(Status(StatusCode.ERROR, "step failed"))
                        ctx = child.get_span_context()
                        for _ in range(LOGS_PER_SPAN):
                            log(service, f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
                ctx = root.get_span_context()
                for _ in range(LOGS_PER_SPAN):
                    log(service, f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
        log("checkout", "", "")  # a line of no trace: decoded too, with empty ids
    for provider in providers.values():
        provider.force_flush()
        provider.shutdown()
    return logs, [_sent_span(span) for span in memory.get_finished_spans()]


def _sent_span(span: ReadableSpan) -> SpanKey:
    assert span.context is not None and span.start_time is not None and span.end_time is not None
    return (
        str(span.resource.attributes["service.name"]),
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
        f"{span.parent.span_id:016x}" if span.parent is not None else "",
        span.name,
        span.kind.value + 1,  # the SDK's SpanKind counts from INTERNAL = 0, OTLP's from UNSPECIFIED
        span.start_time,
        span.end_time,
        span.status.status_code.value,  # UNSET 0, OK 1, ERROR 2 in both
    )


def _service(resource: dict[str, Any]) -> str:
    for attribute in resource.get("attributes", []):
        if attribute["key"] == "service.name":
            return str(attribute["value"].get("stringValue", ""))
    return ""


def _logs_read_back(values: list[bytes]) -> list[LogKey]:
    """The log records of the Collector's OTLP JSON (pdata's names: hex ids, times as strings)."""
    out = []
    for value in values:
        for resource_logs in json.loads(value)["resourceLogs"]:
            service = _service(resource_logs.get("resource", {}))
            for scope_logs in resource_logs.get("scopeLogs", []):
                for record in scope_logs.get("logRecords", []):
                    out.append(
                        (
                            service,
                            record.get("traceId", ""),
                            record.get("spanId", ""),
                            int(record.get("timeUnixNano", 0)),
                            int(record.get("severityNumber", 0)),
                            record.get("severityText", ""),
                        )
                    )
    return out


def _spans_read_back(values: list[bytes]) -> list[SpanKey]:
    out = []
    for value in values:
        for resource_spans in json.loads(value)["resourceSpans"]:
            service = _service(resource_spans.get("resource", {}))
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    out.append(
                        (
                            service,
                            span.get("traceId", ""),
                            span.get("spanId", ""),
                            span.get("parentSpanId", ""),
                            span["name"],
                            int(span.get("kind", 0)),
                            int(span["startTimeUnixNano"]),
                            int(span["endTimeUnixNano"]),
                            int(span.get("status", {}).get("code", 0)),
                        )
                    )
    return out


async def _read_back(
    stack: Stack, otelcol: OtelcolProcess, topics: tuple[str, str], want: tuple[int, int], within: float
) -> tuple[list[LogKey], list[SpanKey]]:
    """What the Collector wrote, read until both topics hold `want` items or `within` passes."""
    deadline = time.monotonic() + within
    while True:
        otelcol.check_alive()
        values = [
            [value for _, value in await consume_all(stack.kafka.bootstrap, topic, idle_seconds=1.0)]
            for topic in topics
        ]
        logs, spans = _logs_read_back(values[0]), _spans_read_back(values[1])
        if (len(logs), len(spans)) >= want or time.monotonic() > deadline:
            return logs, spans
        await asyncio.sleep(1)


@pytest.fixture(scope="module")
def otelcol() -> Path:
    """The Collector's binary, built in a fixture: pytest's per-test limit (timeout_func_only) leaves
    fixtures out, and a first build on a machine with empty Go caches took 654 s here (modules
    downloaded, then 540 s compiling at nice 19 under a load of 10-19); with the caches kept, 27-30 s."""
    return otelcol_binary()


async def test_otel_collector_kafka_receiver_reads_agent_records_with_ids_intact(
    stack: Stack, otelcol: Path, tmp_path: Path
) -> None:
    agent = AgentProcess(
        stack,
        tmp_path,
        extra_config=f'files: {{include: ["{tmp_path}/logs/*.log"], poll_interval_seconds: 0.05}}',
    )
    await agent.create_topics()
    run = uuid.uuid4().hex[:8]
    out_logs, out_spans = f"interop.{run}.otelcol.logs", f"interop.{run}.otelcol.spans"
    await ensure_topics(stack.kafka.bootstrap, [out_logs, out_spans], PARTITIONS)
    configs = peer_configs()
    metrics_port = free_port()
    collector = OtelcolProcess(
        otelcol,
        tmp_path,
        configs.otelcol_consumer_config(
            bootstrap=stack.kafka.bootstrap,
            logs_topic=agent.logs_topic,
            spans_topic=agent.spans_topic,
            group_id=f"interop-{run}",
            metrics_port=metrics_port,
            exporters={
                "kafka": configs.otelcol_json_to_kafka(
                    bootstrap=stack.kafka.bootstrap, logs_topic=out_logs, spans_topic=out_spans
                )
            },
        ),
        metrics_port,
    )
    agent.start()
    collector.start()
    sent_logs, sent_spans = await asyncio.to_thread(
        _generate, f"127.0.0.1:{agent.grpc_port}", agent.log_dir / "app.log", run
    )
    assert len(sent_spans) == TRACES * 3 and len(sent_logs) == TRACES * 3 * LOGS_PER_SPAN + 1

    logs, spans = await _read_back(
        stack, collector, (out_logs, out_spans), (len(sent_logs), len(sent_spans)), within=120
    )
    failed = {
        signal: collector.metric(f"otelcol_kafka_receiver_unmarshal_failed_{signal}")
        for signal in ("log_records", "spans")
    }
    agent_records = {
        topic: len(await consume_all(stack.kafka.bootstrap, topic, idle_seconds=1.0))
        for topic in (agent.logs_topic, agent.spans_topic)
    }
    assert collector.stop() == 0, collector.tail()
    assert agent.stop() == 0, agent.tail()

    assert failed == {"log_records": 0, "spans": 0}, collector.tail()
    assert all(agent_records.values()), agent_records
    # Exactly what was sent, each once: a record the Collector could not decode would be missing,
    # a mangled id or time would show as one missing and one unexpected.
    log_diff = (Counter(sent_logs) - Counter(logs), Counter(logs) - Counter(sent_logs))
    assert log_diff == (Counter(), Counter()), f"missing, unexpected: {log_diff}\n{collector.tail()}"
    span_diff = (Counter(sent_spans) - Counter(spans), Counter(spans) - Counter(sent_spans))
    assert span_diff == (Counter(), Counter()), f"missing, unexpected: {span_diff}\n{collector.tail()}"
