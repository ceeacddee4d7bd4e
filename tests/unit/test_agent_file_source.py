"""The file source in-process: real files, the real FileSource and Delivery, a fake sink.

Rotation (copytruncate, rename and create, replacement), restarts from checkpoints, the rule
that a checkpoint only covers lines the sink acknowledged, and file identity (files that begin
alike, inode reuse, checkpoints of the first-line format, a lone unterminated line, relative
globs). The test and the source share one event loop, so file operations done without an
`await` between them happen, as far as the source can tell, at once (as a rotation between two
of its polls would). The real Kafka path is covered in tests/e2e/test_agent_files.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

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

    async def old_lines_read_and_more_written(self, log: Path, sink: FakeSink) -> str:
        """ "old 0-9" written and acknowledged, then "old 10-14" written but not read yet (the
        rotation that follows races them); the fingerprint the first ten went out under."""
        append(log, *lines("old", 10))
        await wait_until(lambda: self.acked(log) == log.stat().st_size)
        append(log, *lines("old", 5, start=10))
        return delivered(sink)[0].fingerprint

    def saved(self) -> dict[str, int]:
        """The checkpoints on disk: fingerprint -> offset."""
        return {entry.get("fingerprint", key): int(entry["offset"]) for key, entry in self.entries().items()}

    def entries(self) -> dict[str, dict[str, Any]]:
        """The checkpoint file as written."""
        if not self.checkpoints_file.exists():
            return {}
        entries: dict[str, dict[str, Any]] = orjson.loads(self.checkpoints_file.read_bytes())
        return entries


@asynccontextmanager
async def tailing(
    tmp_path: Path,
    sink: FakeSink,
    include: str = "*.log",
    *,
    patterns: list[str] | None = None,
    exclude: list[str] | None = None,
    killed: bool = False,
) -> AsyncIterator[Tail]:
    """A running FileSource over tmp_path/logs/<include> (or the globs `patterns`), through a
    Delivery to `sink`. `killed`: it ends as under kill -9, nothing more written or sent."""
    (tmp_path / "logs").mkdir(exist_ok=True)
    metrics = AgentMetrics()
    spool = SpoolConfig(spill_after_seconds=0.1, fsync="never")
    delivery = Delivery(sink, spool, tmp_path / "spool", metrics)
    await delivery.start()
    config = FileSourceConfig(
        include=patterns or [str(tmp_path / "logs" / include)],
        exclude=exclude or [],
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
        if killed:  # no close, no checkpoint, in-flight sends gone
            tasks = [running, *delivery._senders] + ([delivery._drainer] if delivery._drainer else [])
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for tracked in source.files.values():
                os.close(tracked.fd)
        else:
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
        old_fingerprint = await tail.old_lines_read_and_more_written(log, sink)
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


# -- identity: files that begin alike, inode reuse, old checkpoints, partial lines, relative globs --

BANNER = "service starting"  # the first line many services write, the same in every file


def record_ids(lines_: list[Line]) -> list[tuple[str, int]]:
    """The (fingerprint, offset) part of each delivered line's record id."""
    return [(line.fingerprint, line.offset) for line in lines_]


def fingerprints_of(sink: FakeSink, prefix: str) -> set[str]:
    return {line.fingerprint for line in delivered(sink) if line.text.startswith(prefix)}


async def test_a_file_beginning_like_a_known_one_is_read_whole_under_its_own_ids(tmp_path: Path) -> None:
    sink = FakeSink()
    first, second = tmp_path / "logs" / "first.log", tmp_path / "logs" / "second.log"
    async with tailing(tmp_path, sink) as tail:
        append(first, BANNER, *lines("first", 5))
        await wait_until(lambda: tail.acked(first) == first.stat().st_size)
        append(second, BANNER, *lines("second", 8))  # no copy of `first`: only its first line is the same
        await wait_until(lambda: len(delivered(sink)) >= 15)
        await wait_until(lambda: tail.acked(second) == second.stat().st_size)
        await asyncio.sleep(0.1)  # nothing more comes
    assert texts(sink) == Counter([BANNER, BANNER, *lines("first", 5), *lines("second", 8)])
    ids = record_ids(delivered(sink))
    assert len(set(ids)) == len(ids)  # no line overwrites another's document
    assert fingerprints_of(sink, "first").isdisjoint(fingerprints_of(sink, "second"))


async def test_files_found_together_with_one_first_line_get_their_own_ids_and_checkpoints(
    tmp_path: Path,
) -> None:
    sink = FakeSink()
    logs = tmp_path / "logs"
    logs.mkdir()
    alone, red, blue = logs / "alone.log", logs / "red.log", logs / "blue.log"
    append(alone, BANNER)  # nothing but the banner yet
    append(red, BANNER, *lines("red", 4))
    append(blue, BANNER, *lines("blue", 6))
    async with tailing(tmp_path, sink) as tail:
        await wait_until(lambda: len(delivered(sink)) >= 13)
        await wait_until(lambda: all(tail.acked(p) == p.stat().st_size for p in (alone, red, blue)))
        await asyncio.sleep(0.1)
    assert texts(sink) == Counter([BANNER] * 3 + lines("red", 4) + lines("blue", 6))
    ids = record_ids(delivered(sink))
    assert len(set(ids)) == len(ids)
    assert len({line.fingerprint for line in delivered(sink)}) == 3

    # A restart finds each file's own checkpoint: nothing again, then only what was added.
    append(alone, "alone 0")
    append(red, "red 4")
    restarted = FakeSink()
    async with tailing(tmp_path, restarted) as tail:
        await wait_until(lambda: len(delivered(restarted)) >= 2)
        await asyncio.sleep(0.1)
        assert texts(restarted) == Counter(["alone 0", "red 4"])
        assert set(record_ids(delivered(restarted))).isdisjoint(ids)
        assert {line.fingerprint for line in delivered(restarted)} <= {fp for fp, _ in ids}
        await wait_until(lambda: len(tail.entries()) == 3)


async def test_a_file_truncated_and_begun_again_with_the_same_first_line_gets_new_ids(
    tmp_path: Path,
) -> None:
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink) as tail:
        append(log, BANNER, *lines("before", 3))
        await wait_until(lambda: tail.acked(log) == log.stat().st_size)
        os.truncate(log, 0)
        append(log, BANNER, *lines("after", 2))  # shorter: the truncation is seen
        await wait_until(lambda: len(delivered(sink)) >= 7)
        await asyncio.sleep(0.1)
    assert texts(sink) == Counter([BANNER, BANNER, *lines("before", 3), *lines("after", 2)])
    ids = record_ids(delivered(sink))
    assert len(set(ids)) == len(ids)  # the second banner at offset 0 did not overwrite the first


async def test_a_file_that_gets_a_released_file_s_inode_gets_new_ids(tmp_path: Path) -> None:
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink) as tail:
        append(log, BANNER)
        await wait_until(lambda: tail.acked(log) == log.stat().st_size)
        inode = log.stat().st_ino
        log.unlink()
        await wait_until(lambda: not tail.source.files)  # finished and released
        append(log, BANNER)  # the same bytes, most likely in the same inode (ext4 and tmpfs reuse it)
        await wait_until(lambda: len(delivered(sink)) >= 2)
        reused = log.stat().st_ino == inode
    assert texts(sink) == Counter([BANNER, BANNER])
    first, second = delivered(sink)
    assert first.fingerprint != second.fingerprint, f"inode reused: {reused}"


async def test_a_file_replaced_while_the_agent_was_down_by_one_with_the_same_first_line_is_read_whole(
    tmp_path: Path,
) -> None:
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink) as tail:
        append(log, BANNER, *lines("old", 3))
        await wait_until(lambda: tail.acked(log) == log.stat().st_size)
    old_ids = record_ids(delivered(sink))
    log.unlink()
    append(log, BANNER, *lines("new", 6))  # longer than the checkpoint; likely in the freed inode
    restarted = FakeSink()
    async with tailing(tmp_path, restarted):
        await wait_until(lambda: len(delivered(restarted)) >= 7)
        await asyncio.sleep(0.1)
    assert texts(restarted) == Counter([BANNER, *lines("new", 6)])
    assert set(record_ids(delivered(restarted))).isdisjoint(old_ids)


async def test_a_copy_found_after_the_truncation_was_seen_still_carries_on(tmp_path: Path) -> None:
    """copytruncate under load: the copy may turn up only after the source saw the truncation."""
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink, include="app.log*") as tail:
        old_fingerprint = await tail.old_lines_read_and_more_written(log, sink)
        hidden = log.with_name("copy.tmp")  # not matched yet
        shutil.copyfile(log, hidden)
        os.truncate(log, 0)
        append(log, *lines("new", 3))
        await wait_until(lambda: len(delivered(sink)) >= 13)  # the truncation was seen
        hidden.rename(log.with_name("app.log.1"))  # now the copy is found
        await wait_until(lambda: len(delivered(sink)) >= 18)
        await asyncio.sleep(0.1)
    assert texts(sink) == Counter(lines("old", 15) + lines("new", 3))  # each exactly once
    assert fingerprints_of(sink, "old") == {old_fingerprint}


async def test_a_copy_found_only_after_a_restart_that_followed_the_truncation_carries_on(
    tmp_path: Path,
) -> None:
    """The agent saw the truncation, wrote the file's new fingerprint and stopped (or was killed)
    before the copy turned up: the former beginning is in the checkpoints, so the restarted agent
    still knows the copy, and its lines keep their ids (sent again, not sent twice)."""
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    hidden = log.with_name("copy.tmp")  # not matched yet
    async with tailing(tmp_path, sink, include="app.log*") as tail:
        old_fingerprint = await tail.old_lines_read_and_more_written(log, sink)
        shutil.copyfile(log, hidden)
        os.truncate(log, 0)
        append(log, *lines("new", 3))
        await wait_until(lambda: len(delivered(sink)) >= 13 and tail.acked(log) == log.stat().st_size)
    assert texts(sink) == Counter(lines("old", 10) + lines("new", 3))
    hidden.rename(log.with_name("app.log.1"))  # the copy turns up while the agent is down
    restarted = FakeSink()
    async with tailing(tmp_path, restarted, include="app.log*"):
        await wait_until(lambda: len(delivered(restarted)) >= 5)
        await asyncio.sleep(0.1)
    assert texts(restarted) == Counter(lines("old", 5, start=10))  # the rest, each once
    assert fingerprints_of(restarted, "old") == {old_fingerprint}


def first_line_fingerprint(path: Path, fingerprint_bytes: int = 1024) -> str:
    """The key of a file's checkpoint as agents before the inode in the identity wrote it: the
    blake2b-64 digest of its first line (of at most `fingerprint_bytes`)."""
    head = path.read_bytes()[:fingerprint_bytes]
    return hashlib.blake2b(head[: head.find(b"\n") + 1], digest_size=8).hexdigest()


async def test_checkpoints_keyed_by_the_first_line_are_taken_over(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    kept, twin = logs / "kept.log", logs / "twin.log"
    append(kept, BANNER, *lines("kept", 2))
    acknowledged = kept.stat().st_size
    append(kept, *lines("kept", 2, start=2))  # written while the agent was being upgraded
    # The old agent took `twin` for `kept` (same first line): none of its lines went out.
    append(twin, BANNER, *lines("twin", 3))
    renamed = logs / "renamed.log"  # renamed.log was gone.log when the old agent stopped
    append(renamed, "other first line", *lines("renamed", 2))
    legacy_renamed = first_line_fingerprint(renamed)
    (tmp_path / "checkpoints.json").write_bytes(
        orjson.dumps(
            {
                first_line_fingerprint(kept): {"offset": acknowledged, "path": str(kept)},
                legacy_renamed: {"offset": renamed.stat().st_size, "path": str(logs / "gone.log")},
            }
        )
    )
    sink = FakeSink()
    async with tailing(tmp_path, sink) as tail:
        await wait_until(lambda: len(delivered(sink)) >= 6)
        await wait_until(lambda: all(tail.acked(p) == p.stat().st_size for p in (kept, twin, renamed)))
        await asyncio.sleep(0.1)
        entries = tail.entries()
    assert texts(sink) == Counter(["kept 2", "kept 3", BANNER, *lines("twin", 3)])
    # kept's lines keep the fingerprint the old agent shipped them under: a replay has the same ids.
    assert fingerprints_of(sink, "kept") == {first_line_fingerprint(kept)}
    assert fingerprints_of(sink, "twin") != {first_line_fingerprint(kept)}
    # Every file now has an entry of the new format, and no old one is left.
    assert sorted(entry["path"] for entry in entries.values()) == [str(kept), str(renamed), str(twin)]
    assert all("fingerprint" in entry for entry in entries.values())
    (renamed_entry,) = [e for e in entries.values() if e["path"] == str(renamed)]
    assert renamed_entry["fingerprint"] == legacy_renamed

    restarted = FakeSink()
    append(twin, "twin 3")
    async with tailing(tmp_path, restarted):
        await wait_until(lambda: len(delivered(restarted)) >= 1)
        await asyncio.sleep(0.1)
    assert texts(restarted) == Counter(["twin 3"])


async def test_a_file_of_one_unterminated_line_ships_it_after_the_timeout_under_a_stable_id(
    tmp_path: Path,
) -> None:
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink) as tail:
        log.write_bytes(orjson.dumps({"message": "alone"}))  # no newline, and nothing more for now
        await wait_until(lambda: len(delivered(sink)) == 1)
        (alone,) = delivered(sink)
        assert (alone.text, alone.offset) == ("alone", 0)
        await wait_until(lambda: tail.saved() == {alone.fingerprint: log.stat().st_size})
        with log.open("ab") as handle:
            handle.write(b"\n")  # the line is completed, and more follow
        append(log, *lines("next", 2))
        await wait_until(lambda: len(delivered(sink)) >= 3)
        await asyncio.sleep(0.1)
    assert [line.text for line in delivered(sink)] == ["alone", "next 0", "next 1"]
    assert {line.fingerprint for line in delivered(sink)} == {alone.fingerprint}
    restarted = FakeSink()
    append(log, "next 2")
    async with tailing(tmp_path, restarted):
        await wait_until(lambda: len(delivered(restarted)) >= 1)
        await asyncio.sleep(0.4)  # past the partial-line timeout: still nothing again
    assert [(line.text, line.fingerprint) for line in delivered(restarted)] == [("next 2", alone.fingerprint)]


def is_absolute_path_of(recorded: str, file: Path) -> bool:
    return Path(recorded).is_absolute() and os.path.samefile(recorded, file)


async def test_paths_are_absolute_when_the_include_glob_is_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sink = FakeSink()
    log, skipped = tmp_path / "logs" / "app.log", tmp_path / "logs" / "skip.log"
    async with tailing(tmp_path, sink, patterns=["logs/*.log"], exclude=["logs/skip.log"]) as tail:
        append(log, *lines("line", 3))
        append(skipped, *lines("skipped", 3))
        await wait_until(lambda: tail.acked(log) == log.stat().st_size)
        await wait_until(lambda: list(tail.saved().values()) == [log.stat().st_size])
        entries = tail.entries()
    assert texts(sink) == Counter(lines("line", 3))
    (path,) = {line.path for line in delivered(sink)}
    (saved_path,) = [entry["path"] for entry in entries.values()]
    for recorded in (path, saved_path):
        assert is_absolute_path_of(recorded, log), recorded


async def test_an_old_checkpoint_of_a_relative_path_is_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agents before wrote the path as the glob found it: relative when the glob was (as in
    deploy/examples/agent.yaml)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    append(log, BANNER)
    acknowledged = log.stat().st_size
    append(log, *lines("line", 2))
    old = first_line_fingerprint(log)
    (tmp_path / "checkpoints.json").write_bytes(
        orjson.dumps({old: {"offset": acknowledged, "path": "logs/app.log"}})
    )
    sink = FakeSink()
    async with tailing(tmp_path, sink, patterns=["logs/*.log"]) as tail:
        await wait_until(lambda: len(delivered(sink)) >= 2)
        await wait_until(lambda: tail.saved() == {old: log.stat().st_size})
        await asyncio.sleep(0.1)
    assert [(line.text, line.fingerprint) for line in delivered(sink)] == [("line 0", old), ("line 1", old)]


@pytest.mark.parametrize("copy_name", ["app.log.1", "app-1.log"])  # found after / before the original
async def test_a_copytruncate_while_the_agent_was_down_carries_on_in_the_copy(
    tmp_path: Path, copy_name: str
) -> None:
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink, include="app*") as tail:
        append(log, *lines("old", 10))
        await wait_until(lambda: list(tail.saved().values()) == [log.stat().st_size])
    old_fingerprint = delivered(sink)[0].fingerprint
    append(log, *lines("old", 5, start=10))
    shutil.copyfile(log, log.with_name(copy_name))
    os.truncate(log, 0)
    append(log, *lines("new", 3))
    restarted = FakeSink()
    async with tailing(tmp_path, restarted, include="app*"):
        await wait_until(lambda: len(delivered(restarted)) >= 8)
        await asyncio.sleep(0.1)
    assert texts(restarted) == Counter(lines("old", 5, start=10) + lines("new", 3))
    assert fingerprints_of(restarted, "old") == {old_fingerprint}
    assert fingerprints_of(restarted, "new") != {old_fingerprint}


async def test_files_whose_device_was_renumbered_while_the_agent_was_down_carry_on(tmp_path: Path) -> None:
    """A reboot may give a disk another device number: the checkpoints no longer find their files
    by device and inode, but their recorded beginnings still do."""
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink) as tail:
        append(log, BANNER, *lines("line", 3))
        await wait_until(lambda: list(tail.saved().values()) == [log.stat().st_size])
    (fingerprint,) = {line.fingerprint for line in delivered(sink)}
    entries = orjson.loads((tmp_path / "checkpoints.json").read_bytes())
    renumbered = {
        f"{int(key.split(':')[0]) + 1}:{key.split(':')[1]}": entry for key, entry in entries.items()
    }
    (tmp_path / "checkpoints.json").write_bytes(orjson.dumps(renumbered))
    append(log, "line 3")
    restarted = FakeSink()
    async with tailing(tmp_path, restarted):
        await wait_until(lambda: len(delivered(restarted)) >= 1)
        await asyncio.sleep(0.1)
    assert [(line.text, line.fingerprint) for line in delivered(restarted)] == [("line 3", fingerprint)]


async def test_copytruncate_refilled_past_the_read_offset_before_the_next_poll_is_seen(
    tmp_path: Path,
) -> None:
    """A busy writer may refill a truncated file beyond where the source had read before its next
    poll: the size alone then never shrank. The file's beginning changed, and says so."""
    sink = FakeSink()
    log = tmp_path / "logs" / "app.log"
    async with tailing(tmp_path, sink, include="app.log*") as tail:
        old_fingerprint = await tail.old_lines_read_and_more_written(log, sink)
        shutil.copyfile(log, log.with_name("app.log.1"))
        os.truncate(log, 0)
        append(log, *lines("new", 40))  # at once: longer than all the old content
        await wait_until(lambda: {"old 14", "new 39"} <= set(texts(sink)))  # both ends read
        await asyncio.sleep(0.1)  # nothing more comes
    missing = Counter(lines("old", 15) + lines("new", 40)) - texts(sink)
    assert not missing, f"never shipped: {sorted(missing)}"
    assert texts(sink) == Counter(lines("old", 15) + lines("new", 40))  # each exactly once
    assert fingerprints_of(sink, "old") == {old_fingerprint}
    assert old_fingerprint not in fingerprints_of(sink, "new")
    ids = record_ids(delivered(sink))
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("rotation", ["rename", "copytruncate"])
async def test_a_rotation_racing_a_kill_is_read_on_by_a_restart_before_kafka_answers(
    tmp_path: Path, rotation: str
) -> None:
    """The fault suite's case in-process: the agent dies the moment the file is rotated, with its
    last lines unread; the restart finds the rotated file (or the copy) and the new one while
    Kafka is not reached yet, spools both, and sends both once it is."""
    log = tmp_path / "logs" / "app.log"
    first = FakeSink()
    async with tailing(tmp_path, first, include="app.log*", killed=True) as tail:
        append(log, *lines("old", 10))
        await wait_until(lambda: list(tail.saved().values()) == [log.stat().st_size])
        append(log, *lines("old", 5, start=10))  # the lines written just before the rotation
        if rotation == "rename":
            log.rename(log.with_name("app.log.1"))
        else:
            shutil.copyfile(log, log.with_name("app.log.2"))
            os.truncate(log, 0)
        append(log, *lines("new", 5))
    restarted = FakeSink(partitions=0)  # not connected yet: both files' batches are spooled
    async with tailing(tmp_path, restarted, include="app.log*") as tail:
        await wait_until(lambda: len(tail.delivery.spool) == 2)
        restarted.partitions = 4
        tail.delivery.kick()
        await wait_until(lambda: len(delivered(restarted)) >= 10)
        await asyncio.sleep(0.1)  # nothing more comes
        assert len(tail.delivery.spool) == 0
    assert texts(first) == Counter(lines("old", 10))
    assert texts(restarted) == Counter(lines("old", 5, start=10) + lines("new", 5))
    assert fingerprints_of(restarted, "old") == fingerprints_of(first, "old")  # the same ids
