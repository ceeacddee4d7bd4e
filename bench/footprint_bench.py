"""Footprint at steady load: the agent's CPU share of one core and its RSS, idle and at 1k, 10k and
50k lines/s, next to the OpenTelemetry Collector at the same loads, in the same run.

    .venv/bin/python bench/footprint_bench.py                       # ~5 minutes
    .venv/bin/python bench/footprint_bench.py --rates 1000,10000 --window 30 --json /tmp/fp.json

Each tool runs on its own (the agent first, then the Collector), pinned to one core (`taskset -c
1`) with the stack's servers and the load generator kept off it (agent_bench.off_agent_core), and
reads `*.log` files into topics of its own in the same Kafka (`tether stack up`). The agent runs as
agent_bench's AgentUnderTest, the Collector as peers_bench's OtelcolUnderTest (filelog + json_parser
-> kafka exporter, bench/peers/configs.py; built by bench/peers/build_otelcol.sh); both poll their
files every 50 ms (as agent_bench and peers_bench do; `--poll-defaults`: each at its own default,
the agent 0.25 s, the Collector 0.2 s) and send zstd with acks=all.

Phases, per tool: idle (an empty file, tailed, nothing written), then each rate in turn: a paced
writer process appends agent_bench.realistic_line lines (~290 B JSON, 95 % with a trace id) to a new
file, in one write every 10 ms; after a warm-up the CPU time (utime + stime of /proc/<pid>/stat) and
the RSS (VmRSS of /proc/<pid>/status) are sampled every 0.5 s through a window. The CPU share is the
CPU seconds over the window's wall seconds (1.0 = the whole core); RSS mean and peak are over the
window's samples (VmHWM, the lifetime peak, is printed at the end). Keeping up: lines delivered
(Kafka acknowledged) over the window against lines written, and the backlog (written, not yet
acknowledged) at the window's end. The agent's delivered lines come from its checkpoint lag (bytes
of its files not yet acknowledged, over the mean line size), the Collector's from its exporter's
sent count (otelcol_exporter_sent_log_records). The core is not the tool's alone: other processes
of the machine (not the stack's servers) may run on it, so its busy share (every process, from
/proc/stat) is printed beside the tool's; a tool that falls behind with the core busy may have
been starved rather than at its limit (its CPU seconds per delivered line tell the two apart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from agent_bench import AGENT_CORE, PARTITIONS, AgentUnderTest, off_agent_core, realistic_line
from peers_bench import OtelcolUnderTest, build

from tether.stack import Stack
from tether.stack.kafka import delete_topics, ensure_topics

POOL_LINES = 100_000  # distinct lines the writer cycles through (2 s of the highest rate)
TICK_S = 0.01  # the writer's pace: one write of the lines due every 10 ms
SAMPLE_S = 0.5  # /proc sampling interval


def line_pool() -> tuple[list[bytes], float]:
    """The writer's lines (newline included) and their mean size."""
    rng = random.Random(42)
    pool = [realistic_line(n, rng) + b"\n" for n in range(POOL_LINES)]
    return pool, sum(map(len, pool)) / len(pool)


def paced_writer(
    path: str,
    rate: float,
    pool: list[bytes],
    written: Any,  # multiprocessing.Value("q"): lines written so far, read by the bench
    stop: multiprocessing.synchronize.Event,
    first: int,
) -> None:
    """Appends `rate` lines/s in one write every TICK_S, catching up if a tick came late (so the
    rate over any second is the asked one, unless the writer's core is saturated). Each file starts
    at its own `first` line of the pool: both tools know a file by its first bytes (the Collector's
    fingerprint is its first 1 kB), and files starting alike would be taken for one already read."""
    began = time.monotonic()
    count = 0
    pool = pool[first:] + pool[:first]
    with open(path, "ab", buffering=0) as handle:
        while not stop.is_set():
            due = int((time.monotonic() - began) * rate)
            if due > count:
                start = count % len(pool)
                chunk = pool[start : start + (due - count)]
                while len(chunk) < due - count:  # wrapped around the pool
                    chunk += pool[: due - count - len(chunk)]
                handle.write(b"".join(chunk))
                count = due
                written.value = count
            time.sleep(TICK_S)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_busy_seconds(core: int) -> tuple[float, float]:
    """(busy, total) seconds of one core since boot, from /proc/stat: every process's time on it."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(x) for x in line.split()[1:]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            hz = os.sysconf("SC_CLK_TCK")
            return (sum(ticks[:8]) - idle) / hz, sum(ticks[:8]) / hz
    return 0.0, 0.0


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak since start), MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) / 1024
    return out


@dataclass
class Tool:
    """One process under test, and how many of the lines written it has delivered."""

    name: str
    process: AgentUnderTest
    delivered: Callable[[int], float]  # lines written -> lines Kafka acknowledged
    written_total: int = 0  # lines written in earlier phases (their files stay tailed)
    figures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid


# Each tool's own default file poll interval (--poll-defaults): the agent's files.poll_interval_seconds
# and the Collector's filelog poll_interval. Otherwise both poll every 50 ms, as in agent_bench.
OWN_POLL_DEFAULTS = {"agent": 0.25, "otelcol": 0.2}


class OtelcolPolling(OtelcolUnderTest):
    """peers_bench's Collector with another filelog poll interval (None: the peers bench's 50 ms)."""

    poll_interval: float | None = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command()
        if self.poll_interval is not None:
            path = Path(argv[-1].removeprefix("file:"))
            config = yaml.safe_load(path.read_text())
            config["receivers"]["file_log"]["poll_interval"] = f"{self.poll_interval * 1000:.0f}ms"
            path.write_text(yaml.safe_dump(config))
        return argv, env


def agent_tool(work: Path, bootstrap: str, line_bytes: float, poll: float | None = None) -> Tool:
    overrides = [f"files.poll_interval_seconds={poll}"] if poll is not None else []
    agent = AgentUnderTest(work, bootstrap, files=True, overrides=overrides)
    # checkpoint lag: bytes of the tailed files not yet acknowledged by Kafka (read or not)
    return Tool(
        "agent",
        agent,
        lambda written: written - agent.metric("tether_agent_checkpoint_lag_bytes") / line_bytes,
    )


def otelcol_tool(work: Path, bootstrap: str, line_bytes: float, poll: float | None = None) -> Tool:
    otelcol = OtelcolPolling(work, bootstrap, files=True)
    otelcol.poll_interval = poll
    return Tool("otelcol", otelcol, lambda written: otelcol.delivered_lines())


def measure(
    tool: Tool, load: str, rate: float, window: float, written: Any, line_bytes: float
) -> dict[str, Any]:
    """Samples CPU and RSS through `window` seconds; lines delivered against written over it."""
    pid = tool.pid

    def counts() -> tuple[float, float]:
        total = tool.written_total + (written.value if written is not None else 0)
        return total, tool.delivered(total)

    written0, delivered0 = counts()
    cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
    core0 = core_busy_seconds(AGENT_CORE)
    rss: list[float] = []
    while time.monotonic() - t0 < window:
        time.sleep(SAMPLE_S)
        rss.append(proc_memory_mb(pid)["VmRSS"])
    cpu1, t1 = proc_cpu_seconds(pid), time.monotonic()
    core1 = core_busy_seconds(AGENT_CORE)
    written1, delivered1 = counts()
    elapsed = t1 - t0
    wrote = written1 - written0
    return {
        "tool": tool.name,
        "load": load,
        "rate": rate,
        "window_s": elapsed,
        "cpu_share": (cpu1 - cpu0) / elapsed,
        # the whole core's busy share, every process on it (other sessions' work shares the machine)
        "core_busy": (core1[0] - core0[0]) / max(core1[1] - core0[1], 1e-9),
        "cpu_s_per_million": (cpu1 - cpu0) / wrote * 1e6 if wrote else None,
        # per line it got through: what the core would cost a tool that falls behind
        "cpu_s_per_million_delivered": (cpu1 - cpu0) / (delivered1 - delivered0) * 1e6
        if delivered1 > delivered0
        else None,
        "rss_mean_mb": statistics.fmean(rss),
        "rss_peak_mb": max(rss),
        "written_per_s": wrote / elapsed,
        "delivered_per_s": (delivered1 - delivered0) / elapsed,
        "backlog_lines": written1 - delivered1,
    }


def run_tool(
    stack: Stack,
    work: Path,
    make: Callable[[Path, str, float, float | None], Tool],
    rates: list[int],
    poll: float | None,
    warmup: float,
    window: float,
    pool: list[bytes],
    line_bytes: float,
) -> Tool:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "idle.log").touch()  # tailed from the start: idle is "watching a quiet file"
    tool = make(work, stack.kafka.bootstrap, line_bytes, poll)
    process = tool.process
    asyncio.run(ensure_topics(stack.kafka.bootstrap, [process.logs_topic, process.spans_topic], PARTITIONS))
    process.start()
    context = multiprocessing.get_context("fork")
    try:
        with off_agent_core(stack, True):  # the writer, forked here, inherits the other core
            time.sleep(warmup)
            tool.figures.append(measure(tool, "idle", 0, window, None, line_bytes))
            report(tool.figures[-1])
            for number, rate in enumerate(rates):
                written = context.Value("q", 0)
                stop = context.Event()
                path = logs / f"load-{rate}.log"
                writer = context.Process(
                    target=paced_writer,
                    args=(str(path), rate, pool, written, stop, 7919 * (number + 1)),
                    daemon=True,
                )
                writer.start()
                time.sleep(warmup)
                figures = measure(tool, f"{rate // 1000}k lines/s", rate, window, written, line_bytes)
                stop.set()
                writer.join()
                # drain: how long after the writer stopped until everything was acknowledged
                total = tool.written_total + written.value
                drained = time.monotonic()
                while tool.delivered(total) < total - 0.5 and time.monotonic() - drained < 15:
                    time.sleep(0.1)
                figures["drain_s"] = time.monotonic() - drained
                figures["undelivered_after_drain"] = max(total - tool.delivered(total), 0)
                tool.written_total = total
                tool.figures.append(figures)
                report(figures)
        memory = proc_memory_mb(tool.pid)
        for figures in tool.figures:
            figures["vmhwm_mb_at_end"] = memory["VmHWM"]
    finally:
        process.stop()
        for path in logs.glob("*.log"):
            path.unlink()
        asyncio.run(delete_topics(stack.kafka.bootstrap, [process.logs_topic, process.spans_topic]))
    return tool


def report(figures: dict[str, Any]) -> None:
    shown = "  ".join(f"{k}={v:,.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"[footprint] {shown}", file=sys.stderr, flush=True)


def table(tools: list[Tool]) -> str:
    rows = [
        "| tool | load | CPU share of one core | CPU s per million lines written / delivered "
        "| RSS mean | RSS peak "
        "| written/s | delivered/s | backlog at window end | drain after stop | core busy (all processes) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tool in tools:
        for f in tool.figures:
            per_million = (
                f"{f['cpu_s_per_million']:.2f} / {f['cpu_s_per_million_delivered']:.2f}"
                if f["cpu_s_per_million"]
                else "-"
            )
            drain = f"{f['drain_s']:.1f} s" if "drain_s" in f else "-"
            rows.append(
                f"| {f['tool']} | {f['load']} | {f['cpu_share']:.3f} | {per_million} "
                f"| {f['rss_mean_mb']:.1f} MB | {f['rss_peak_mb']:.1f} MB | {f['written_per_s']:,.0f} "
                f"| {f['delivered_per_s']:,.0f} | {f['backlog_lines']:,.0f} | {drain} "
                f"| {f['core_busy']:.2f} |"
            )
    return "\n".join(rows)


def ratio_table(agent: Tool, peer: Tool) -> str:
    peer_of = f"{peer.name} / agent"
    rows = [
        f"| load | {peer_of} CPU share | {peer_of} RSS mean | {peer_of} RSS peak |",
        "|---|---|---|---|",
    ]
    for a, p in zip(agent.figures, peer.figures, strict=True):
        cpu = p["cpu_share"] / a["cpu_share"] if a["cpu_share"] else float("nan")
        rows.append(
            f"| {a['load']} | {cpu:.1f}x | {p['rss_mean_mb'] / a['rss_mean_mb']:.2f}x "
            f"| {p['rss_peak_mb'] / a['rss_peak_mb']:.2f}x |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="1000,10000,50000", help="lines/s, comma separated")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before each window")
    parser.add_argument("--window", type=float, default=20.0, help="seconds sampled per load")
    parser.add_argument("--tools", default="agent,otelcol")
    parser.add_argument(
        "--poll-defaults",
        action="store_true",
        help="each tool polls its files at its own default (agent 0.25 s, Collector 0.2 s), not every 50 ms",
    )
    parser.add_argument("--json", type=Path, help="also write the figures there")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    makers = {"agent": agent_tool, "otelcol": otelcol_tool}
    if "otelcol" in args.tools:
        OtelcolUnderTest.binary = build("build_otelcol.sh")
    stack = Stack()
    if any(pid is None for _, pid, _, _ in stack.status()):
        stack.up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    pool, line_bytes = line_pool()
    tools = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tether-footprint-") as tmp:
        for name in args.tools.split(","):
            work = Path(tmp) / name
            tools.append(
                run_tool(
                    stack,
                    work,
                    makers[name],
                    rates,
                    OWN_POLL_DEFAULTS[name] if args.poll_defaults else None,
                    args.warmup,
                    args.window,
                    pool,
                    line_bytes,
                )
            )
    polling = "each tool's own default (agent 0.25 s, Collector 0.2 s)" if args.poll_defaults else "50 ms"
    print(f"file polling: {polling}")
    print(
        f"cpu={os.cpu_count()} python={sys.version.split()[0]} mean line {line_bytes:.0f} B, "
        f"warm-up {args.warmup:.0f} s, window {args.window:.0f} s, whole run {time.monotonic() - began:.0f} s"
    )
    print("load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    for tool in tools:
        print(f"{tool.name}: peak RSS over the run (VmHWM) {tool.figures[-1]['vmhwm_mb_at_end']:.1f} MB")
    print()
    print(table(tools))
    by_name = {tool.name: tool for tool in tools}
    if "agent" in by_name and "otelcol" in by_name:
        print()
        print(ratio_table(by_name["agent"], by_name["otelcol"]))
    if args.json:
        args.json.write_text(json.dumps([t.figures for t in tools], indent=2))


if __name__ == "__main__":
    main()
