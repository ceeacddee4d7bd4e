"""The fault suite on the single-node stack: crashes at each acknowledgement boundary, rotation
racing a crash, collectors dying and joining, Elasticsearch refusing writes for a minute. Every
case ends with the golden check (tests/e2e/golden.py): each line and span exactly once in
Elasticsearch, each trace whole in Jaeger.

Crash points are fail points (tether/failpoints.py): the process SIGKILLs itself the n-th time it
reaches one, so the crash lands on the boundary named, not wherever a timer happens to fall.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch

from tests.e2e.agent_harness import AgentProcess, TetherProcess, wait_until
from tests.e2e.collector_harness import CollectorProcess
from tests.e2e.golden import Golden, GoldenSource, check
from tether.failpoints import ENVIRONMENT_VARIABLE
from tether.stack import Stack

pytestmark = pytest.mark.stack

BLOCK_SECONDS = 60


@dataclass
class Pipeline:
    """One agent tailing `logs/app.log*` and taking OTLP, collectors of one group behind it."""

    stack: Stack
    root: Path
    agent: AgentProcess
    golden: Golden
    collectors: list[CollectorProcess] = field(default_factory=list)

    def source(self, **options: object) -> GoldenSource:
        return GoldenSource(
            self.golden,
            self.agent.log_dir / "app.log",
            f"127.0.0.1:{self.agent.grpc_port}",
            **options,  # type: ignore[arg-type]
        )

    def collector(self, failpoints: str = "", timestamps: str = "") -> CollectorProcess:
        collector = CollectorProcess(
            self.stack,
            self.root / "collectors",
            self.agent.logs_topic,
            self.agent.spans_topic,
            group=f"faults-{self.golden.run}",
            name=f"collector-{len(self.collectors) + 1}",
        )
        if timestamps:
            collector.config.write_text(collector.config.read_text() + timestamps)
        if failpoints:
            collector.env = {ENVIRONMENT_VARIABLE: failpoints}
        self.collectors.append(collector)
        collector.start()
        return collector

    def diagnostics(self) -> str:
        """Each process's notable lines over all its starts (a loss at a restart shows there: what was
        taken up where, what was spooled and drained), then its tail; then the agent's state as the
        failure left it (a batch still spooled, set aside as *.corrupt or half-written, and where
        each file's checkpoint stands) and the log files with their sizes."""
        processes: list[TetherProcess] = [self.agent, *self.collectors]
        outputs = [
            f"--- {p.output.name} (notable):\n{p.notable()}\n--- {p.output.name} (tail):\n{p.tail(1500)}"
            for p in processes
        ]
        state = _listing(self.agent.root / "state")
        return "\n".join([*outputs, f"--- agent state and logs:\n{state}\n{_listing(self.agent.log_dir)}"])

    def stop_all(self) -> None:
        """A graceful stop of whatever still runs: each must exit 0."""
        statuses = {p.output.name: p.stop() for p in [self.agent, *self.collectors] if _running(p)}
        assert all(status == 0 for status in statuses.values()), (statuses, self.diagnostics())


def _listing(directory: Path) -> str:
    """Every file under `directory` with its size; checkpoints.json in full (it is small)."""
    if not directory.exists():
        return f"{directory}: none"
    lines = []
    for path in sorted(directory.rglob("*")):
        with contextlib.suppress(OSError):  # a spooled batch may be drained meanwhile
            if path.is_file():
                lines.append(f"{path.relative_to(directory.parent)} {path.stat().st_size} B")
    checkpoints = directory / "checkpoints.json"
    if checkpoints.exists():
        lines.append(f"checkpoints.json: {checkpoints.read_text(errors='replace')}")
    return "\n".join(lines)


def _running(process: TetherProcess) -> bool:
    return process.process is not None and process.process.poll() is None


@asynccontextmanager
async def pipeline(stack: Stack, root: Path, agent_failpoints: str = "") -> AsyncIterator[Pipeline]:
    agent = AgentProcess(
        stack,
        root / "agent",
        extra_config=(
            f'files: {{include: ["{root}/agent/logs/app.log*"], poll_interval_seconds: 0.1, '
            "checkpoint_interval_seconds: 0.3}\n"
            "log_level: debug"  # each batch spooled and sent from the spool: kept by notable()
        ),
    )
    await agent.create_topics()
    run = uuid.uuid4().hex[:10]
    golden = Golden(run=f"golden-{run}", agent_id=agent.agent_id, service=f"golden-{run}")
    if agent_failpoints:
        agent.env = {ENVIRONMENT_VARIABLE: agent_failpoints}
    agent.start()
    try:
        yield Pipeline(stack, root, agent, golden)
    finally:
        TetherProcess.reap()


async def _crashed(process: TetherProcess, within: float = 60) -> None:
    """Until the process killed itself at its fail point (SIGKILL, not any other exit)."""
    assert process.process is not None
    code = await asyncio.to_thread(process.process.wait, within)
    assert code == -signal.SIGKILL, (
        f"{process.kind} exited with {code}, not by its fail point:\n{process.tail()}"
    )


async def _restart_agent(agent: AgentProcess) -> None:
    agent.env = None  # disarmed: the restarted agent runs as in production
    agent.start()


async def test_agent_killed_after_a_kafka_ack_before_its_checkpoint(stack: Stack, tmp_path: Path) -> None:
    """Kafka holds the batch, the checkpoint does not say so: the restart sends it again, the ids
    make the second copy invisible."""
    async with pipeline(stack, tmp_path, agent_failpoints="agent.after_kafka_ack=10") as p:
        p.collector()
        source = p.source()
        source.start()
        await _crashed(p.agent)
        assert source.traces_sent < source.total_traces, "crashed after the stream: no fault mid-stream"
        await _restart_agent(p.agent)
        await asyncio.to_thread(source.finish)
        await check(stack, p.golden, diagnostics=p.diagnostics)
        p.stop_all()


async def test_agent_killed_after_a_checkpoint_is_written(stack: Stack, tmp_path: Path) -> None:
    """The checkpoint is on disk, the batches read after it are in flight or unread: the restart
    reads from the checkpoint on."""
    async with pipeline(stack, tmp_path, agent_failpoints="agent.after_checkpoint=6") as p:
        p.collector()
        source = p.source(traces=100, pace_seconds=0.05)  # a chunk read in every poll
        source.start()
        await _crashed(p.agent)
        assert source.traces_sent < source.total_traces, "crashed after the stream: no fault mid-stream"
        await _restart_agent(p.agent)
        await asyncio.to_thread(source.finish)
        await check(stack, p.golden, diagnostics=p.diagnostics)
        p.stop_all()


async def test_collector_killed_between_the_elasticsearch_ack_and_the_commit(
    stack: Stack, tmp_path: Path
) -> None:
    """Elasticsearch has the documents, Kafka's committed offset is behind them: the next owner
    replays them under the same ids."""
    async with pipeline(stack, tmp_path) as p:
        crashing = p.collector(failpoints="collector.before_commit=6")
        crashing.wait_assigned()
        source = p.source()
        source.start()
        await _crashed(crashing)
        assert source.traces_sent < source.total_traces, "crashed after the stream: no fault mid-stream"
        p.collector()
        await asyncio.to_thread(source.finish)
        await check(stack, p.golden, diagnostics=p.diagnostics)
        p.stop_all()


@pytest.mark.parametrize("rotation", ["rename", "copytruncate"])
async def test_rotation_racing_a_kill_9_of_the_agent(stack: Stack, tmp_path: Path, rotation: str) -> None:
    """The agent dies the moment the file is rotated, before its next poll: the trace's lines written
    just before are only in the rotated file (or the copy), which the restart must find by its
    identity and read on under the same ids."""
    async with pipeline(stack, tmp_path) as p:
        p.collector()
        source = p.source()
        source.rotations = {19: rotation, 39: rotation}
        kills: list[int] = []

        def kill_the_agent() -> None:
            p.agent.kill9()
            kills.append(source.traces_sent)

        source.after_rotation = kill_the_agent
        source.start()
        for rotations in (1, 2):
            await wait_until(lambda n=rotations: len(kills) >= n, 60, f"rotation {rotations} and its kill")
            await _restart_agent(p.agent)
        await asyncio.to_thread(source.finish)
        await check(stack, p.golden, diagnostics=p.diagnostics)
        p.stop_all()


async def test_three_collectors_one_killed_one_added_mid_stream(stack: Stack, tmp_path: Path) -> None:
    """Two rebalances while data flows: a member dies (its partitions move after the session
    timeout), a new one joins."""
    async with pipeline(stack, tmp_path) as p:
        for _ in range(3):
            p.collector()
        for collector in p.collectors:
            collector.wait_assigned()
        source = p.source(traces=90)
        source.start()
        await wait_until(lambda: source.traces_sent >= 25, 60, "the stream to be under way")
        p.collectors[1].kill9()
        await wait_until(lambda: source.traces_sent >= 50, 60, "more of the stream")
        p.collector().wait_assigned()
        await asyncio.to_thread(source.finish)
        await check(stack, p.golden, within=180, diagnostics=p.diagnostics)
        p.stop_all()


async def test_elasticsearch_write_blocked_for_a_minute_while_data_flows(
    stack: Stack, tmp_path: Path
) -> None:
    """`index.blocks.write` (what a full disk amounts to) on the run's own daily indices for a
    minute: the collector waits it out, dead-letters nothing, and delivers everything once lifted.
    The run's timestamps are on a day of its own (1990-2009), so no other test's writes stop."""
    day = datetime.date(1990, 1, 1) + datetime.timedelta(days=random.randrange(7300))
    indices = [f"{alias}-{day:%Y.%m.%d}" for alias in ("tether-logs", "tether-spans")]
    es = AsyncElasticsearch(stack.elasticsearch.url)
    try:
        for index in indices:
            assert not await es.indices.exists(index=index), f"{index} exists: another run is using it"
        async with pipeline(stack, tmp_path) as p:
            collector = p.collector(timestamps="timestamps: {max_age_days: 20000}\n")
            source = p.source(traces=100, pace_seconds=0.7, day=day)  # ~75 s of sending
            source.start()

            async def exist() -> bool:
                return all([await es.indices.exists(index=index) for index in indices])

            await wait_until_async(exist, 60, "the run's daily indices")
            await es.indices.put_settings(index=",".join(indices), settings={"index.blocks.write": True})
            blocked_at = source.traces_sent
            await wait_until(
                lambda: collector.metrics().get("tether_collector_write_blocked") == 1, 30, "the block seen"
            )
            await asyncio.sleep(BLOCK_SECONDS)
            assert source.traces_sent > blocked_at + 30, "data stopped flowing during the block"
            assert collector.metrics().get("tether_collector_write_blocked") == 1
            await es.indices.put_settings(index=",".join(indices), settings={"index.blocks.write": None})
            await asyncio.to_thread(source.finish)
            await check(stack, p.golden, diagnostics=p.diagnostics)
            dead = collector.metrics().get('tether_collector_deadlettered_total{index="tether-logs"}', 0)
            assert dead == 0
            p.stop_all()
    finally:
        for index in [*indices, f"tether-traces-{day:%Y.%m.%d}"]:
            if await es.indices.exists(index=index):
                await es.indices.put_settings(index=index, settings={"index.blocks.write": None})
                await es.indices.delete(index=index)
        await es.close()


async def wait_until_async(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {within}s waiting for {what}")
