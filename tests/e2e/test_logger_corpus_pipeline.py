"""The logger corpus through the real pipeline: every library's file, as that library wrote it, is
tailed by a `tether agent` (default configuration for reading lines), carried by Kafka and indexed
by a `tether collector` into Elasticsearch, where each line is one document with the expected
message, level, ids, service and time, and nothing the line does not have."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from tests.e2e.agent_harness import TetherProcess, free_port
from tests.logger_corpus import expected_of, libraries, lines_of
from tether.collector.documents import iso_timestamp
from tether.stack import Stack
from tether.stack.kafka import ensure_topics

pytestmark = pytest.mark.stack


async def _indexed(es: AsyncElasticsearch, paths: list[str], expected: int) -> list[dict[str, Any]]:
    query = {"terms": {"log.file.path": paths}}
    deadline, hits = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        await es.indices.refresh(index="tether-logs", ignore_unavailable=True)
        response = await es.search(index="tether-logs", query=query, size=10_000, ignore_unavailable=True)
        hits = list(response["hits"]["hits"])
        if len(hits) >= expected:
            break
        await asyncio.sleep(1)
    return hits


async def test_every_corpus_line_is_indexed_as_expected(stack: Stack, tmp_path: Path) -> None:
    run = f"corpus-{uuid.uuid4().hex[:8]}"
    logs_topic, spans_topic = f"e2e.{run}.logs", f"e2e.{run}.spans"
    await ensure_topics(stack.kafka.bootstrap, [logs_topic, spans_topic], 4)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    for library in libraries():
        (log_dir / f"{library}.log").write_bytes(lines_of(library))
    agent_ops, collector_ops = free_port(), free_port()
    env = {"KAFKA": stack.kafka.bootstrap}
    agent_config = tmp_path / "agent.yaml"
    agent_config.write_text(f"""
agent_id: e2e-{run}
data_dir: {tmp_path / "agent-state"}
kafka: {{bootstrap_servers: "${{KAFKA}}", logs_topic: {logs_topic}, spans_topic: {spans_topic}}}
files: {{include: ["{log_dir}/*.log"], poll_interval_seconds: 0.1}}
otlp: null
ops: {{endpoint: "127.0.0.1:{agent_ops}"}}
""")
    collector_config = tmp_path / "collector.yaml"
    # The corpus keeps its time of writing: a wide timestamp window keeps it there.
    collector_config.write_text(f"""
kafka:
  bootstrap_servers: "${{KAFKA}}"
  group_id: "e2e-{run}"
  logs_topic: {logs_topic}
  spans_topic: {spans_topic}
correlation: {{wait_seconds: 1}}
timestamps: {{max_age_days: 36500}}
elasticsearch: {{url: "{stack.elasticsearch.url}", replicas: 0}}
jaeger: {{enabled: false}}
ops: {{endpoint: "127.0.0.1:{collector_ops}"}}
""")
    agent = TetherProcess("agent", agent_config, tmp_path / "agent.out", agent_ops, env)
    collector = TetherProcess("collector", collector_config, tmp_path / "collector.out", collector_ops, env)
    agent.launch()
    collector.launch()
    expected = {str(log_dir / f"{library}.log"): expected_of(library) for library in libraries()}
    es = AsyncElasticsearch(stack.elasticsearch.url)
    try:
        hits = await _indexed(es, sorted(expected), sum(map(len, expected.values())))
    finally:
        await es.close()
        assert agent.stop() == 0, agent.tail()
        assert collector.stop() == 0, collector.tail()

    by_file: dict[str, list[dict[str, Any]]] = {}
    for hit in sorted(hits, key=lambda h: int(h["_id"].rsplit(":", 1)[1])):
        by_file.setdefault(hit["_source"]["log"]["file"]["path"], []).append(hit["_source"])
    assert {path: len(docs) for path, docs in by_file.items()} == {p: len(e) for p, e in expected.items()}
    for path, docs in by_file.items():
        for number, (doc, want) in enumerate(zip(docs, expected[path], strict=True), 1):
            where = f"{Path(path).name} line {number}: {doc}"
            assert doc["message"] == want["message"], where
            assert doc["log"].get("level") == want["level"], where
            assert doc.get("trace", {}).get("id") == want["trace_id"], where
            assert doc.get("span", {}).get("id") == want["span_id"], where
            assert doc.get("service", {}).get("name") == want["service"], where
            assert doc["tether"]["parse_error"] is False, where
            if want["keys"]["time"] is not None:
                low, high = iso_timestamp(want["time_min_ns"]), iso_timestamp(want["time_max_ns"])
                assert low <= doc["@timestamp"] <= high, where
