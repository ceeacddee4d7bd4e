"""The file source over the kubelet's log tree (tests/data/k8s, written by containerd's and
dockerd's own writers): formats detected per file, compressed rotations never read, records
joined across chunks and polls, a record that never ends shipped after the timeout."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.unit.agent_fakes import FakeSink, wait_until
from tether.agent.checkpoint import Checkpoints
from tether.agent.chunks import PythonChunkEncoder
from tether.agent.config import FileSourceConfig, SpoolConfig
from tether.agent.container_logs import detect_format
from tether.agent.delivery import Delivery
from tether.agent.metrics import AgentMetrics
from tether.agent.sources.file import FileSource
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import (
    ATTR_FILE_PATH,
    ATTR_K8S_CONTAINER_NAME,
    ATTR_LOG_IOSTREAM,
    ATTR_RECORD_OFFSET,
    ATTR_TRUNCATED,
)

K8S = Path(__file__).resolve().parents[1] / "data" / "k8s"


def records(sink: FakeSink) -> list[tuple[str, dict[str, Any], dict[str, Any], LogRecord]]:
    """(path, resource attributes, record attributes, record) of every delivered record."""
    out = []
    for request in sink.logs():
        for resource_logs in request.resource_logs:
            resource = {kv.key: kv.value for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                path = next(
                    kv.value.string_value for kv in scope_logs.scope.attributes if kv.key == ATTR_FILE_PATH
                )
                for record in scope_logs.log_records:
                    attributes = {kv.key: kv.value for kv in record.attributes}
                    out.append((path, resource, attributes, record))
    return out


@asynccontextmanager
async def tailing_pods(
    tmp_path: Path, sink: FakeSink, read_chunk_bytes: int, max_line_bytes: int
) -> AsyncIterator[Path]:
    """A FileSource over a copy of the fixture tree, every file of every container included."""
    root = tmp_path / "node"
    shutil.copytree(K8S / "var", root / "var")
    metrics = AgentMetrics()
    delivery = Delivery(
        sink, SpoolConfig(spill_after_seconds=0.1, fsync="never"), tmp_path / "spool", metrics
    )
    await delivery.start()
    config = FileSourceConfig(
        include=[str(root / "var/log/pods/*/*/*.log*")],  # the .gz rotations too: excluded anyway
        poll_interval_seconds=0.01,
        partial_line_timeout_seconds=0.3,
        read_chunk_bytes=read_chunk_bytes,
        max_line_bytes=max_line_bytes,
    )
    source = FileSource(
        config,
        agent_id="unit",
        checkpoints=Checkpoints(tmp_path / "checkpoints.json"),
        delivery=delivery,
        partitions=4,
        mapping=default_mapping(),
        metrics=metrics,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(source.run(stop))
    try:
        yield root
    finally:
        stop.set()
        await running
        await source.close(1)
        await delivery.stop(1)


def _expected(root: Path, max_line_bytes: int) -> list[tuple[str, int, str]]:
    """(path, offset, body) of each record of the uncompressed files, encoded whole."""
    encoder = PythonChunkEncoder(
        agent_id="unit", partitions=4, mapping=default_mapping(), max_line_bytes=max_line_bytes
    )
    out = []
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
                    offset = next(a.value.int_value for a in record.attributes if a.key == ATTR_RECORD_OFFSET)
                    out.append((str(path), offset, record.body.string_value))
    return sorted(out)


async def test_every_container_record_arrives_once_and_whole(tmp_path: Path) -> None:
    sink = FakeSink()
    async with tailing_pods(tmp_path, sink, read_chunk_bytes=64 * 1024, max_line_bytes=32 * 1024) as root:
        expected = _expected(root, 32 * 1024)
        await wait_until(lambda: len(records(sink)) >= len(expected))
        await asyncio.sleep(0.1)  # nothing more comes
    got = sorted(
        (path, attributes[ATTR_RECORD_OFFSET].int_value, record.body.string_value)
        for path, _, attributes, record in records(sink)
    )
    assert got == expected
    assert not any(path.endswith(".gz") for path, *_ in got)
    assert any(body == "exiting without a newline" for *_, body in got)  # shipped after its timeout
    longs = [body for *_, body in got if "item-00000" in body]
    assert len(longs) == 2 and all(orjson.loads(body) for body in longs)  # CRI and Docker, joined
    for _, resource, attributes, _ in records(sink):
        assert resource[ATTR_K8S_CONTAINER_NAME].string_value in ("checkout", "api")
        assert attributes[ATTR_LOG_IOSTREAM].string_value in ("stdout", "stderr")


async def test_records_longer_than_the_limit_are_cut_and_their_rest_skipped(tmp_path: Path) -> None:
    """Physical lines (16 KiB) longer than a chunk, records longer than max_line_bytes: the head
    ships, flagged, the rest of the record is skipped across chunks, other records come whole."""
    sink = FakeSink()
    async with tailing_pods(tmp_path, sink, read_chunk_bytes=4096, max_line_bytes=1024):
        await wait_until(lambda: any("exiting" in r[3].body.string_value for r in records(sink)))
        await wait_until(lambda: any("ünicode" in r[3].body.string_value for r in records(sink)))
        await asyncio.sleep(0.1)
    cri = [r for r in records(sink) if "/checkout/0.log" in r[0] and not r[0].endswith("101500")]
    bodies = [r[3].body.string_value for r in cri]
    long = [r for r in cri if "item-00000" in r[3].body.string_value]
    assert len(long) == 1 and len(long[0][3].body.string_value) == 1024
    assert long[0][2][ATTR_TRUNCATED].bool_value
    assert not any("item-01487" in body for body in bodies)  # its rest: skipped
    assert any("payment declined" in body for body in bodies)  # the other stream between its pieces
    assert "café ☃ done" in "".join(bodies)
    offsets = [r[2][ATTR_RECORD_OFFSET].int_value for r in cri]
    assert len(offsets) == len(set(offsets))
