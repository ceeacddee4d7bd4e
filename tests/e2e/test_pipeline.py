"""One pipeline, all real: OTel SDK -> agent -> Kafka -> collector -> Elasticsearch + Jaeger.

The agent and the collector run as `tether agent` / `tether collector` processes with configs
written here; spans come from the OpenTelemetry SDK's own OTLP/gRPC exporter, log lines are
appended to a file the agent tails.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from tests.e2e.agent_harness import TetherProcess, free_port
from tether.stack import Stack
from tether.stack.kafka import ensure_topics

pytestmark = pytest.mark.stack

PARTITIONS = 8
TRACES = 12
SPANS_PER_TRACE = 3  # root + two children
LOGS_PER_SPAN = 2


def _write_log(handle: Any, line: dict[str, Any] | str) -> None:
    handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    handle.flush()


def _generate(endpoint: str, log_path: Path, run: str) -> list[dict[str, Any]]:
    """Send spans with the SDK's OTLP/gRPC exporter and write log lines carrying their ids.

    Returns the traced log lines written, with the span each belongs to.
    """
    logs: list[dict[str, Any]] = []
    providers = {
        service: TracerProvider(resource=Resource.create({"service.name": service}))
        for service in ("checkout", "payments")
    }
    for provider in providers.values():
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    with log_path.open("a") as handle:
        for t in range(TRACES):
            service = "checkout" if t % 2 == 0 else "payments"
            tracer = providers[service].get_tracer("tether.e2e")
            with tracer.start_as_current_span(f"{run} request {t}") as root:
                for c in range(SPANS_PER_TRACE - 1):
                    with tracer.start_as_current_span(f"{run} step {t}.{c}") as child:
                        if c == 1 and t % 3 == 0:
                            child.set_status(Status(StatusCode.ERROR, "step failed"))
                        _log_span(handle, child, service, run, logs)
                _log_span(handle, root, service, run, logs)
        # Noise the pipeline must carry without correlating: no trace id, and not JSON at all.
        _write_log(
            handle, {"@timestamp": "2026-01-01T00:00:00Z", "level": "info", "message": f"{run} untraced"}
        )
        _write_log(handle, f"{run} this line is not JSON")
    for provider in providers.values():
        provider.force_flush()
        provider.shutdown()
    return logs


def _log_span(handle: Any, span: Any, service: str, run: str, logs: list[dict[str, Any]]) -> None:
    ctx = span.get_span_context()
    trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    for n in range(LOGS_PER_SPAN):
        message = f"{run} {span.name} log {n}"
        if n == 0:  # the format, with a nested data payload
            line: dict[str, Any] = {
                "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".123456+00:00",
                "level": "INFO",
                "service": service,
                "trace_id": trace_id,
                "span_id": span_id,
                "message": message,
                "data": {"attempt": n, "user": "u-42"},
            }
        else:  # ECS names, and no service: the collector must take it from the span
            line = {
                "@timestamp": time.time(),
                "log.level": "error",
                "trace.id": trace_id,
                "span.id": span_id,
                "message": message,
            }
        _write_log(handle, line)
        logs.append(
            {
                "message": message,
                "trace_id": trace_id,
                "span_id": span_id,
                "span_name": span.name,
                "service": service,
            }
        )


async def _search_all(es: AsyncElasticsearch, index: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    response = await es.search(index=index, query=query, size=10_000, ignore_unavailable=True)
    return list(response["hits"]["hits"])


async def _wait_for(
    es: AsyncElasticsearch, index: str, query: dict[str, Any], expected: int, within: float = 120.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    hits: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        await es.indices.refresh(index=index, ignore_unavailable=True)
        hits = await _search_all(es, index, query)
        if len(hits) >= expected:
            # Give stragglers (duplicates, if any) a moment to show up before judging.
            await asyncio.sleep(2)
            await es.indices.refresh(index=index)
            return await _search_all(es, index, query)
        await asyncio.sleep(1)
    return hits


def _jaeger_trace(stack: Stack, trace_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{stack.jaeger.query_url}/api/traces/{trace_id}", timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


async def test_spans_and_logs_arrive_once_and_correlated(stack: Stack, tmp_path: Path) -> None:
    run = f"run-{uuid.uuid4().hex[:10]}"
    logs_topic, spans_topic = f"e2e.{run}.logs", f"e2e.{run}.spans"
    await ensure_topics(stack.kafka.bootstrap, [logs_topic, spans_topic], PARTITIONS)
    otlp_port, agent_ops, collector_ops = free_port(), free_port(), free_port()
    (tmp_path / "logs").mkdir()
    log_path = tmp_path / "logs" / "app.log"
    log_path.touch()
    env = {"KAFKA": stack.kafka.bootstrap}
    agent_config = tmp_path / "agent.yaml"
    agent_config.write_text(f"""
agent_id: e2e-{run}
data_dir: {tmp_path / "agent-state"}
kafka: {{bootstrap_servers: "${{KAFKA}}", logs_topic: {logs_topic}, spans_topic: {spans_topic}}}
files: {{include: ["{tmp_path}/logs/*.log"], poll_interval_seconds: 0.1}}
otlp: {{grpc_endpoint: "127.0.0.1:{otlp_port}", http_endpoint: "127.0.0.1:{free_port()}"}}
ops: {{endpoint: "127.0.0.1:{agent_ops}"}}
""")
    collector_config = tmp_path / "collector.yaml"
    collector_config.write_text(f"""
kafka:
  bootstrap_servers: "${{KAFKA}}"
  group_id: "e2e-{run}"
  logs_topic: {logs_topic}
  spans_topic: {spans_topic}
correlation: {{wait_seconds: 10}}
elasticsearch: {{url: "{stack.elasticsearch.url}", replicas: 0}}
jaeger: {{endpoint: "{stack.jaeger.otlp_grpc_endpoint}"}}
ops: {{endpoint: "127.0.0.1:{collector_ops}"}}
""")
    agent_log, collector_log = tmp_path / "agent.out", tmp_path / "collector.out"
    agent = TetherProcess("agent", agent_config, agent_log, agent_ops, env)
    collector = TetherProcess("collector", collector_config, collector_log, collector_ops, env)
    agent.launch()
    collector.launch()
    try:
        agent.wait_listening(otlp_port)
        logs_written = await asyncio.to_thread(_generate, f"127.0.0.1:{otlp_port}", log_path, run)
        expected_spans = TRACES * SPANS_PER_TRACE
        assert len(logs_written) == TRACES * SPANS_PER_TRACE * LOGS_PER_SPAN

        es = AsyncElasticsearch(stack.elasticsearch.url)
        try:
            trace_ids = sorted({entry["trace_id"] for entry in logs_written})
            span_hits = await _wait_for(
                es, "tether-spans", {"terms": {"trace.id": trace_ids}}, expected_spans
            )
            log_hits = await _wait_for(
                es, "tether-logs", {"match_phrase": {"message": run}}, len(logs_written) + 2
            )
        finally:
            await es.close()
    finally:
        agent_status = agent.stop()
        collector_status = collector.stop()
    diagnostics = (
        f"\nagent log:\n{agent_log.read_text()[-2000:]}\ncollector log:\n{collector_log.read_text()[-2000:]}"
    )

    assert_delivered_once(stack, run, log_path, logs_written, span_hits, log_hits, diagnostics)

    assert agent_status == 0, diagnostics
    assert collector_status == 0, diagnostics


def assert_delivered_once(
    stack: Stack,
    run: str,
    log_path: Path,
    logs_written: list[dict[str, Any]],
    span_hits: list[dict[str, Any]],
    log_hits: list[dict[str, Any]],
    diagnostics: str,
) -> None:
    """Every span and log line of `run` exactly once, correlated, and every trace in Jaeger.

    Shared with the secured pipeline test (tests/e2e/test_secure_pipeline.py)."""
    expected_spans = TRACES * SPANS_PER_TRACE
    trace_ids = sorted({entry["trace_id"] for entry in logs_written})
    # Every span exactly once, under its deterministic id.
    assert len(span_hits) == expected_spans, diagnostics
    span_by_id = {hit["_source"]["span"]["id"]: hit["_source"] for hit in span_hits}
    assert len(span_by_id) == expected_spans
    assert {hit["_id"] for hit in span_hits} == {f"{s['trace']['id']}-{sid}" for sid, s in span_by_id.items()}
    assert Counter(s["service"]["name"] for s in span_by_id.values()) == {
        "checkout": SPANS_PER_TRACE * ((TRACES + 1) // 2),
        "payments": SPANS_PER_TRACE * (TRACES // 2),
    }
    assert sum(s["span"]["status"] == "ERROR" for s in span_by_id.values()) == len(range(0, TRACES, 3))

    # Every log line exactly once (by id and by content), enriched from its span.
    assert len(log_hits) == len(logs_written) + 2, diagnostics
    assert len({hit["_id"] for hit in log_hits}) == len(log_hits)
    messages = Counter(hit["_source"]["message"] for hit in log_hits)
    assert all(count == 1 for count in messages.values()), messages.most_common(3)
    by_message = {hit["_source"]["message"]: hit["_source"] for hit in log_hits}
    for expected in logs_written:
        doc = by_message[expected["message"]]
        assert doc["trace"]["id"] == expected["trace_id"]
        assert doc["span"]["id"] == expected["span_id"]
        assert doc["span"]["name"] == expected["span_name"], doc
        assert doc["service"]["name"] == expected["service"], doc
        assert doc["tether"]["correlation"] == "span"
        assert span_by_id[expected["span_id"]]["span"]["name"] == expected["span_name"]
    with_data = [d for d in by_message.values() if "data" in d]
    assert with_data and all(d["data"]["user"] == "u-42" for d in with_data)
    untraced = by_message[f"{run} untraced"]
    assert untraced["tether"]["correlation"] == "untraced" and "trace" not in untraced
    raw = by_message[f"{run} this line is not JSON"]  # plain text: its own message
    assert raw["tether"]["parse_error"] is False and "data" not in raw and "level" not in raw["log"]
    # Ids as ever, agent:fingerprint:offset, the collector making them of the records' offsets.
    content = log_path.read_bytes()
    starts = {0, *(i + 1 for i, byte in enumerate(content) if byte == ord("\n"))}
    for hit in log_hits:
        agent_id, _, offset = hit["_id"].rsplit(":", 2)
        assert agent_id == f"e2e-{run}" and int(offset) in starts, hit["_id"]
        assert hit["_source"]["tether"]["record_id"] == hit["_id"]
        assert hit["_source"]["log"]["file"] == {"path": str(log_path)}
    assert len({hit["_id"].rsplit(":", 2)[1] for hit in log_hits}) == 1  # one file, one fingerprint
    assert len({int(hit["_id"].rsplit(":", 1)[1]) for hit in log_hits}) == len(log_hits)

    # Jaeger's own HTTP API has every trace with all its spans.
    for trace_id in trace_ids:
        body = _jaeger_trace(stack, trace_id)
        (trace,) = body["data"]
        assert {s["spanID"] for s in trace["spans"]} == {
            sid for sid, s in span_by_id.items() if s["trace"]["id"] == trace_id
        }
