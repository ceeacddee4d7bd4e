"""Kubernetes container logs through the real pipeline: the kubelet's tree (tests/data/k8s, written by
containerd's and dockerd's own writers) tailed by `tether agent` with the DaemonSet's include glob,
carried by Kafka, indexed by `tether collector`: one document per record the runtime's lines
make, with the pod's metadata as keyword fields, the stream, the container as the service when
the line names none, joined partial lines and stack traces, and nothing of the .gz rotations."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from elasticsearch import AsyncElasticsearch
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.e2e.agent_harness import TetherProcess, free_port
from tether.agent.chunks import PythonChunkEncoder
from tether.agent.container_logs import detect_format
from tether.schemas.log_fields import default_mapping
from tether.stack import Stack
from tether.stack.kafka import ensure_topics

pytestmark = pytest.mark.stack

K8S = Path(__file__).resolve().parents[1] / "data" / "k8s"
POD_PATH = re.compile(r"/pods/([^_/]+)_([^_/]+)_([^_/]+)/([^/]+)/(\d+)\.log")


def _bodies(root: Path) -> dict[tuple[str, int], str]:
    """(path, offset) -> the whole content of each record the agent makes of the uncompressed
    files (the reference encoder, checked against the runtimes' files in
    tests/unit/test_container_logs.py; routing keys left in, so the test can read them)."""

    encoder = PythonChunkEncoder(
        agent_id="x",
        partitions=1,
        mapping=default_mapping(),
        max_line_bytes=256 * 1024,
        move_routing_keys=False,
    )
    out: dict[tuple[str, int], str] = {}
    for path in sorted(root.glob("var/log/pods/*/*/*.log*")):
        if path.suffix == ".gz":
            continue
        data = path.read_bytes()
        chunk = encoder.encode(
            data,
            0,
            fingerprint="f",
            path=str(path),
            untraced_partition=0,
            observed_ns=1,
            log_format=detect_format(data),
            flush_before=len(data),
        )
        for value in chunk.records.values():
            for resource_logs in ExportLogsServiceRequest.FromString(value).resource_logs:
                for record in resource_logs.scope_logs[0].log_records:
                    offset = next(
                        a.value.int_value for a in record.attributes if a.key == "log.file.record_offset"
                    )
                    out[(str(path), offset)] = record.body.string_value
    return out


def _key(hit: dict[str, Any]) -> tuple[str, int]:
    """(path, offset) of a document: its id ends in the record's offset."""
    return hit["_source"]["log"]["file"]["path"], int(hit["_id"].rsplit(":", 1)[1])


async def test_container_logs_are_indexed_with_their_pod(stack: Stack, tmp_path: Path) -> None:
    run = f"k8s-{uuid.uuid4().hex[:8]}"
    logs_topic, spans_topic = f"e2e.{run}.logs", f"e2e.{run}.spans"
    await ensure_topics(stack.kafka.bootstrap, [logs_topic, spans_topic], 4)
    shutil.copytree(K8S / "var", tmp_path / "var")
    expected = _bodies(tmp_path)
    agent_ops, collector_ops = free_port(), free_port()
    env = {"KAFKA": stack.kafka.bootstrap}
    agent_config = tmp_path / "agent.yaml"
    agent_config.write_text(f"""
agent_id: e2e-{run}
data_dir: {tmp_path / "agent-state"}
kafka: {{bootstrap_servers: "${{KAFKA}}", logs_topic: {logs_topic}, spans_topic: {spans_topic}}}
files:
  include: ["{tmp_path}/var/log/pods/*/*/*.log*"]
  poll_interval_seconds: 0.1
  partial_line_timeout_seconds: 1
otlp: null
ops: {{endpoint: "127.0.0.1:{agent_ops}"}}
""")
    collector_config = tmp_path / "collector.yaml"
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
    es = AsyncElasticsearch(stack.elasticsearch.url)
    query = {"prefix": {"log.file.path": str(tmp_path)}}
    hits: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(hits) < len(expected):
            await asyncio.sleep(1)
            await es.indices.refresh(index="tether-logs")
            hits = (await es.search(index="tether-logs", query=query, size=10_000))["hits"]["hits"]
    finally:
        await es.close()
        assert agent.stop() == 0, agent.tail()
        assert collector.stop() == 0, collector.tail()

    docs = {
        (h["_source"]["log"]["file"]["path"], int(h["_id"].rsplit(":", 1)[1])): h["_source"] for h in hits
    }
    assert set(docs) == set(expected)  # every record once, none of the .gz rotations
    mapping = default_mapping()
    for (path, offset), doc in docs.items():
        where = f"{Path(path).name}@{offset}: {doc}"
        namespace, pod, uid, container, restart = POD_PATH.search(path).groups()  # type: ignore[union-attr]
        assert doc["k8s"] == {
            "namespace": {"name": namespace},
            "pod": {"name": pod, "uid": uid},
            "container": {"name": container, "restart_count": int(restart)},
        }, where
        assert doc["log"]["iostream"] in ("stdout", "stderr"), where
        body = expected[(path, offset)]
        try:
            content = orjson.loads(body)
        except orjson.JSONDecodeError:
            content = None
        if isinstance(content, dict):
            assert doc["message"] == mapping.lookup_message(content, mapping.message)[1], where
            named = mapping.lookup_service(content)[1]
            assert doc["service"]["name"] == (named or container), where
        else:
            assert doc["message"] == body, where
            assert doc["service"]["name"] == container, where
        assert doc["tether"]["parse_error"] is False, where
    messages = [doc["message"] for doc in docs.values()]
    java = [m for m in messages if m.startswith("java.lang.IllegalStateException")]
    assert java and all("\n\tat billing.Api.send(Api.java:42)" in m for m in java)  # one document
    assert sum("item-00000" in m for m in messages) == 2  # split lines joined: CRI and Docker
