"""The file source in-process: real files, the real FileSource and Delivery, a fake sink.

Rotation (copytruncate, rename and create, replacement), restarts from checkpoints, and the rule
that a checkpoint only covers lines the sink acknowledged. The test and the source share one
event loop, so file operations done without an `await` between them happen, as far as the
source can tell, at once (as a rotation between two of its polls would). The real Kafka path is
covered in tests/e2e/test_agent_files.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from tests.unit.agent_fakes import FakeSink, wait_until
from tether.agent.checkpoint import Checkpoints
from tether.agent.config import FileSourceConfig, SpoolConfig
from tether.agent.delivery import Delivery
from tether.agent.metrics import AgentMetrics
from tether.agent.sources.file import FileSource
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import ATTR_FILE_FINGERPRINT, ATTR_FILE_PATH, ATTR_RECORD_OFFSET


@dataclass(frozen=True, slots=True)
class Line:
    """A delivered file line: the file it came from, its byte offset there, and its text."""

    path: str
    fingerprint: str
    offset: int
    text: str


def delivered(sink: FakeSink) -> list[Line]:
    lines = []
    for request in sink.logs():
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                scope = {kv.key: kv.value.string_value for kv in scope_logs.scope.attributes}
                for record in scope_logs.log_records:
                    offset = next(a.value.int_value for a in record.attributes if a.key == ATTR_RECORD_OFFSET)
                    message = orjson.loads(record.body.string_value)["message"]
                    lines.append(Line(scope[ATTR_FILE_PATH], scope[ATTR_FILE_FINGERPRINT], offset, message))
    return lines


def texts(sink: FakeSink) -> Counter[str]:
    return Counter(line.text for line in delivered(sink))


def append(path: Path, *messages: str) -> None:
    with path.open("ab") as handle:
        handle.writelines(orjson.dumps({"message": m}) + b"\n" for m in messages)


def lines(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix} {n}" for n in range(start, start + count)]


@dataclass
class Tail:
    source: FileSource
    delivery: Delivery
    metrics: AgentMetrics
    checkpoints_file: Path

    def acked(self, path: Path) -> int | None:
        """How far the source counts `path`'s file (the one now at that path) as acknowledged."""
        inode = os.stat(path).st_ino
        for tracked in self.source.files.values():
            if tracked.inode[1] == inode:
                return tracked.acked_offset
        return None

    def saved(self) -> dict[str, int]:
        """The checkpoints on disk: fingerprint -> offset."""
        if not self.checkpoints_file.exists():
            return {}
        entries = orjson.loads(self.checkpoints_file.read_bytes())
        return {fingerprint: int(entry["offset"]) for fingerprint, entry in entries.items()}


@asynccontextmanager
async def tailing(tmp_path: Path, sink: FakeSink, include: str = "*.log") -> AsyncIterator[Tail]:
    """A running FileSource over tmp_path/logs/<include>, through a Delivery to `sink`."""
    (tmp_path / "logs").mkdir(exist_ok=True)
    metrics = AgentMetrics()
    spool = SpoolConfig(spill_after_seconds=0.1, fsync="never")
    delivery = Delivery(sink, spool, tmp_path / "spool", metrics)
    await delivery.start()
    config = FileSourceConfig(
        include=[str(tmp_path / "logs" / include)],
        poll_interval_seconds=0.01,
        checkpoint_interval_seconds=0.02,
        partial_line_timeout_seconds=0.3,
        read_chunk_bytes=4096,
        max_line_bytes=1024,
    )
    checkpoints_file = tmp_path / "checkpoints.json"
    source = FileSource(
        config,
        agent_id="unit",
        checkpoints=Checkpoints(checkpoints_file),
        delivery=delivery,
        partitions=4,
        mapping=default_mapping(),
        metrics=metrics,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(source.run(stop))
    try:
        yield Tail(source, delivery, metrics, checkpoints_file)
    finally:
        stop.set()
        await running
        await source.close(1)
        await delivery.stop(1)


async def test_copytruncate_reads_the_copy_s_rest_and_the_truncated_file_from_the_start(
    tmp_path: Path,
) -> None:
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink, include="app.log*") as tail:
        append(log, *lines("old", 10))
        await wait_until(lambda: tail.acked(log) == log.stat().st_size)
        # Between two polls: lines the source has not read yet, then logrotate's copytruncate.
        append(log, *lines("old", 5, start=10))
        shutil.copyfile(log, log.with_name("app.log.1"))
        os.truncate(log, 0)
        append(log, *lines("new", 3))
        await wait_until(lambda: len(delivered(sink)) >= 18)
        await asyncio.sleep(0.1)  # nothing more comes
        assert texts(sink) == Counter(lines("old", 15) + lines("new", 3))  # each exactly once
        by_text = {line.text: line for line in delivered(sink)}
        assert by_text["old 10"].path.endswith("app.log.1")  # the rest came from the copy
        assert by_text["old 10"].fingerprint == by_text["old 0"].fingerprint  # same ids as before
        new = [by_text[text] for text in lines("new", 3)]
        assert new[0].offset == 0 and new[0].fingerprint != by_text["old 0"].fingerprint
        assert [line.offset for line in new] == sorted(line.offset for line in new)
        await wait_until(lambda: tail.saved().get(new[0].fingerprint) == log.stat().st_size)


async def test_rename_rotation_reads_the_old_file_to_its_end_and_the_new_from_the_start(
    tmp_path: Path,
) -> None:
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    rotated = log.with_name("app.log.1")  # not matched by *.log: only the open descriptor leads to it
    async with tailing(tmp_path, sink) as tail:
        append(log, *lines("old", 10))
        await wait_until(lambda: tail.acked(log) == log.stat().st_size)
        old_fingerprint = delivered(sink)[0].fingerprint
        append(log, *lines("old", 5, start=10))  # not read yet
        log.rename(rotated)
        append(log, *lines("new", 5))
        append(rotated, "old 15")  # the application still writes to the old file until it reopens
        await wait_until(lambda: len(delivered(sink)) >= 21)
        assert texts(sink) == Counter(lines("old", 16) + lines("new", 5))
        new = [line for line in delivered(sink) if line.text.startswith("new")]
        assert new[0].offset == 0 and {line.fingerprint for line in new} != {old_fingerprint}
        # Read to its end and quiet for the partial-line timeout, the old file is let go.
        await wait_until(lambda: len(tail.source.files) == 1)
        await wait_until(lambda: set(tail.saved()) == {new[0].fingerprint})
        assert tail.saved()[new[0].fingerprint] == log.stat().st_size


async def test_a_file_replaced_by_another_is_read_from_its_start(tmp_path: Path) -> None:
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink) as tail:
        append(log, *lines("first", 5))
        await wait_until(lambda: tail.acked(log) == log.stat().st_size)
        replacement = log.with_name("app.tmp")
        append(replacement, *lines("second", 8))  # longer: its offsets run past the first file's
        replacement.replace(log)
        await wait_until(lambda: len(delivered(sink)) >= 13)
        assert texts(sink) == Counter(lines("first", 5) + lines("second", 8))
        second = [line for line in delivered(sink) if line.text.startswith("second")]
        assert [line.text for line in second] == lines("second", 8)
        assert second[0].offset == 0
        assert second[0].fingerprint != delivered(sink)[0].fingerprint
        await wait_until(lambda: set(tail.saved()) == {second[0].fingerprint})


async def test_a_restart_resumes_at_the_checkpoints_fingerprint_by_fingerprint(tmp_path: Path) -> None:
    sink = FakeSink()
    kept, replaced = tmp_path / "logs" / "kept.log", tmp_path / "logs" / "replaced.log"
    async with tailing(tmp_path, sink) as tail:
        append(kept, *lines("kept", 4))
        append(replaced, *lines("replaced", 4))
        await wait_until(lambda: tail.acked(kept) == kept.stat().st_size)
        await wait_until(lambda: tail.acked(replaced) == replaced.stat().st_size)
    # While the agent is down: one file grows, the other is replaced by one with another first line.
    append(kept, *lines("kept", 2, start=4))
    replaced.unlink()
    append(replaced, *lines("other", 3))
    restarted = FakeSink()
    async with tailing(tmp_path, restarted):
        await wait_until(lambda: len(delivered(restarted)) >= 5)
        await asyncio.sleep(0.1)  # nothing more comes
    assert texts(restarted) == Counter(["kept 4", "kept 5", *lines("other", 3)])


async def test_checkpoints_advance_only_over_lines_the_sink_acknowledged(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.hang()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink) as tail:
        append(log, *lines("line", 20))
        size = log.stat().st_size
        # Unacknowledged, the batch is spilled to the spool: durable, but not acknowledged.
        await wait_until(lambda: len(tail.delivery.spool) > 0)
        await asyncio.sleep(0.2)  # ten checkpoint intervals
        assert tail.acked(log) == 0
        assert list(tail.saved().values()) == [0]
        lag = tail.metrics.registry.get_sample_value("tether_agent_checkpoint_lag_bytes", {"path": str(log)})
        assert lag == size
        sink.resume()
        await wait_until(lambda: list(tail.saved().values()) == [size])
        assert tail.acked(log) == size
        assert set(texts(sink)) == set(lines("line", 20))
