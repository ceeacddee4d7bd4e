"""The agent's file source against the real Kafka: rotation, crashes and bad input lose nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agent_harness import AgentProcess, Writer, consume_all, log_records, wait_until
from tether.stack import Stack

pytestmark = pytest.mark.stack


def _by_sequence(records: list[dict[str, Any]]) -> dict[int, set[str]]:
    ids: dict[int, set[str]] = defaultdict(set)
    for record in records:
        if record["body"].startswith("{"):
            ids[json.loads(record["body"])["seq"]].add(record["id"])
    return ids


async def _delivered(agent: AgentProcess, expected: int, within: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        records = log_records(
            await consume_all(agent.stack.kafka.bootstrap, agent.logs_topic, idle_seconds=1.5)
        )
        if len(_by_sequence(records)) >= expected or time.monotonic() > deadline:
            return records
        await asyncio.sleep(1)


async def test_rotation_by_rename_and_by_copytruncate_loses_no_line(stack: Stack, tmp_path: Path) -> None:
    # The copytruncate copy must be matched too: lines between the last read and the truncate
    # are only in the copy (as with Filebeat and Vector).
    agent = AgentProcess(
        stack,
        tmp_path,
        extra_config=f'files: {{include: ["{tmp_path}/logs/app.log*"], poll_interval_seconds: 0.05}}',
    )
    await agent.create_topics()
    agent.start()
    writer = Writer(agent.log_dir / "app.log", total=3000, per_second=1000)
    writer.rotations = {999: "rename", 1999: "copytruncate"}
    writer.start()
    await asyncio.to_thread(writer.join)
    records = await _delivered(agent, 3000)
    assert agent.stop() == 0, agent.tail()

    by_sequence = _by_sequence(records)
    missing = sorted(set(range(3000)) - set(by_sequence))
    assert not missing, f"{len(missing)} lines lost, first {missing[:10]}\n{agent.tail()}"
    # A line read twice (from a file and its copy) carries one record id: invisible downstream.
    assert all(len(ids) == 1 for ids in by_sequence.values()), [
        s for s, i in by_sequence.items() if len(i) > 1
    ][:5]
    # Every record sits in its trace's partition.
    for record in records:
        assert record["partition"] == int.from_bytes(record["trace_id"][8:16], "big") % 8


async def test_kill_9_and_restart_delivers_every_line(stack: Stack, tmp_path: Path) -> None:
    agent = AgentProcess(
        stack,
        tmp_path,
        extra_config=f'files: {{include: ["{tmp_path}/logs/*.log"], '
        f"poll_interval_seconds: 0.05, "
        f"checkpoint_interval_seconds: 0.2}}",
    )
    await agent.create_topics()
    agent.start()
    writer = Writer(agent.log_dir / "app.log", total=4000, per_second=2000)
    writer.start()
    await wait_until(lambda: writer.written > 1500, 30, "the writer to be under way")
    agent.kill9()
    checkpoint = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    agent.start()  # while the writer goes on
    await asyncio.to_thread(writer.join)
    records = await _delivered(agent, 4000)
    assert agent.stop() == 0, agent.tail()

    by_sequence = _by_sequence(records)
    missing = sorted(set(range(4000)) - set(by_sequence))
    assert not missing, f"{len(missing)} lines lost, first {missing[:10]}\n{agent.tail()}"
    assert all(len(ids) == 1 for ids in by_sequence.values())  # replays reuse the record id
    (acknowledged,) = [entry["offset"] for entry in checkpoint.values()]
    assert acknowledged > 0, "no checkpoint was written before the kill"
    # Only what was not acknowledged before the kill may be sent twice.
    sent: dict[str, int] = defaultdict(int)
    for record in records:
        sent[record["id"]] += 1
    replayed_offsets = [int(rid.rsplit(":", 1)[1]) for rid, count in sent.items() if count > 1]
    assert all(offset >= acknowledged for offset in replayed_offsets), (min(replayed_offsets), acknowledged)


async def test_a_backlog_is_read_turn_after_turn_without_poll_waits(stack: Stack, tmp_path: Path) -> None:
    """A file with more than one turn of reading (16 chunks) waiting is read on at once, not after
    a poll interval per turn: with the default 0.25 s interval, catching up used to idle ~40 % of
    the time. Here a turn is 64 KiB and the interval 5 s, so ten turns would take 45 s of waits."""
    lines = 6400  # ~100 B each: ~640 KiB, ten turns
    agent = AgentProcess(
        stack,
        tmp_path,
        extra_config=f'files: {{include: ["{tmp_path}/logs/*.log"], '
        "read_chunk_bytes: 4096, max_line_bytes: 1024, poll_interval_seconds: 5}",
    )
    await agent.create_topics()
    with (agent.log_dir / "backlog.log").open("w") as handle:
        for seq in range(lines):
            line = {"seq": seq, "level": "info", "message": f"backlog line {seq:06d}"}
            handle.write(json.dumps(line) + "\n")
    agent.start()
    await wait_until(
        lambda: agent.metrics().get("tether_agent_file_lines_total", 0) >= lines, 20, "the backlog read"
    )
    records = await _delivered(agent, lines)
    assert agent.stop() == 0, agent.tail()
    assert sorted(_by_sequence(records)) == list(range(lines))


async def test_bad_file_input_is_kept_flagged_and_counted(stack: Stack, tmp_path: Path) -> None:
    agent = AgentProcess(
        stack,
        tmp_path,
        extra_config=f'files: {{include: ["{tmp_path}/logs/*.log"], '
        "max_line_bytes: 1024, partial_line_timeout_seconds: 1}",
    )
    await agent.create_topics()
    agent.start()
    path = agent.log_dir / "bad.log"
    with path.open("wb") as handle:
        handle.write(b'{"level":"info","message":"first good line"}\n')
        handle.write(b"this is not json at all\n")  # plain text: a message, no parse error
        handle.write(b"{this starts as an object and is none\n")
        handle.write(b'{"message":"broken utf8 \xff\xfe here","level":"warn"}\n')
        handle.write(b"\x00\x01\x02\x89PNG binary junk \xc3\x28\n")
        handle.write(b'{"message":"' + b"y" * 5000 + b'"}\n')  # over max_line_bytes
        handle.write(b'{"message":"last good line"}\n')
        handle.write(b'{"message":"no newline yet"}')  # shipped after the partial-line timeout
    await wait_until(lambda: agent.metrics().get("tether_agent_file_lines_total", 0) >= 8, 30, "8 lines")
    records = log_records(await consume_all(stack.kafka.bootstrap, agent.logs_topic, idle_seconds=1.5))
    metrics = agent.metrics()
    assert agent.stop() == 0, agent.tail()

    assert len(records) == 8, [r["body"][:60] for r in records]
    # ids are rebuilt from each record's offset: every one where its line starts
    content = path.read_bytes()
    starts = [0, *(i + 1 for i, byte in enumerate(content) if byte == ord("\n"))]
    assert sorted(int(r["id"].rsplit(":", 1)[1]) for r in records) == starts
    assert {r["path"] for r in records} == {str(path)}

    def flags(fragment: str) -> set[str]:
        (record,) = [r for r in records if fragment in r["body"]]
        return {key for key, value in record["attributes"].items() if value.bool_value}

    assert flags("first good line") == {"tether.keys_moved"}  # its level is the record's field
    assert flags("this is not json at all") == set()
    assert flags("{this starts as an object") == {"tether.parse_error"}
    assert flags("broken utf8 \ufffd\ufffd here") == {"tether.invalid_utf8"}  # still parsed as JSON
    assert flags("PNG binary junk") == {"tether.invalid_utf8"}  # plain text too
    (long_line,) = [r for r in records if r["body"].startswith('{"message":"yyy')]
    assert len(long_line["body"].encode()) == 1024 and flags("yyyy") == {
        "tether.truncated",
        "tether.parse_error",
    }
    assert flags("last good line") == set()
    assert flags("no newline yet") == set()
    assert metrics["tether_agent_parse_errors_total"] == 2  # the broken object, the cut long line
    assert metrics["tether_agent_truncated_lines_total"] == 1
