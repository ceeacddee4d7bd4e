"""Kafka stopped for 30 s under load: the agent spools to disk, keeps answering, loses nothing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.e2e.agent_harness import AgentProcess, Writer, consume_all, log_records, span_ids, wait_until
from tether.stack import Stack

pytestmark = pytest.mark.stack

OUTAGE_SECONDS = 30


def _send_spans(endpoint: str, count: int) -> list[int]:
    """Spans through the SDK's own OTLP/gRPC exporter, one export per span; their span ids."""
    provider = TracerProvider(resource=Resource.create({"service.name": "outage"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30))
    )
    tracer = provider.get_tracer("tether.outage")
    sent = []
    for n in range(count):
        with tracer.start_as_current_span(f"during outage {n}") as span:
            sent.append(span.get_span_context().span_id)
    provider.shutdown()
    return sent


async def test_kafka_outage_spools_then_drains_in_order_without_loss(stack: Stack, tmp_path: Path) -> None:
    agent = AgentProcess(
        stack,
        tmp_path,
        extra_config=(
            f'files: {{include: ["{tmp_path}/logs/*.log"], poll_interval_seconds: 0.1}}\n'
            "spool: {spill_after_seconds: 2, fsync: always}"
        ),
    )
    await agent.create_topics()
    agent.start()
    writer = Writer(agent.log_dir / "app.log", total=6000, per_second=150)  # ~40 s of writing
    writer.start()
    await wait_until(lambda: writer.written > 300, 20, "writing to be under way")
    stack.kafka.process.stop()
    try:
        outage_started = time.monotonic()
        spans = await asyncio.to_thread(_send_spans, f"127.0.0.1:{agent.grpc_port}", 5)
        await wait_until(lambda: agent.metrics().get("tether_agent_spool_bytes", 0) > 0, 20, "spooling")
        during = agent.metrics()
        assert during["tether_agent_spool_batches"] > 0
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
    finally:
        stack.kafka.start()
        await asyncio.to_thread(stack.kafka.wait_healthy, 120)
    await asyncio.to_thread(writer.join)
    await wait_until(
        lambda: agent.metrics().get("tether_agent_spool_bytes", 1) == 0, 120, "the spool to drain"
    )
    records = log_records(await consume_all(stack.kafka.bootstrap, agent.logs_topic))
    delivered_spans = span_ids(await consume_all(stack.kafka.bootstrap, agent.spans_topic))
    final = agent.metrics()
    assert agent.stop() == 0, agent.tail()

    sequences = {json.loads(r["body"])["seq"] for r in records}
    missing = sorted(set(range(6000)) - sequences)
    assert not missing, f"{len(missing)} lines lost, first {missing[:10]}\n{agent.tail()}"
    assert {int.from_bytes(s, "big") for s in delivered_spans} >= set(spans)
    assert final.get("tether_agent_dropped_total", 0) == 0
    assert final["tether_agent_spool_batches"] == 0
