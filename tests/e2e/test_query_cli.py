"""`tether trace` and `tether logs` as real processes, reading what a real collector indexed.

Traces go through the pipeline (Kafka -> `tether collector` -> Elasticsearch) under a unique run
id and service names, so the data of other tests and runs cannot match.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.e2e.agent_harness import free_port
from tests.e2e.collector_harness import (
    CollectorProcess,
    Producer,
    TraceSpec,
    create_topics,
    new_topics,
    wait_for_count,
)
from tether.stack import Stack

pytestmark = pytest.mark.stack

TETHER = str(Path(sys.executable).with_name("tether"))
TRACES = 4  # trace 0 has an error span (TraceSpec: n % 5 == 0, child 1)
MS = 1_000_000
# Where spans sit in a trace (start, end in ms from its start); trace 0 nests op 2 in op 1.
SPAN_TIMES = [(0, 10), (2, 6), (7, 9)]
DEEP_SPAN_TIMES = [(0, 10), (2, 6), (3, 5)]


@dataclass
class Indexed:
    run: str
    service: str
    traces: list[TraceSpec]
    logs_topic: str
    spans_topic: str
    group: str
    root: Path


def tether(*args: str, es_url: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100"}
    if es_url:
        env["ELASTICSEARCH_URL"] = es_url
    return subprocess.run(
        [TETHER, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def rfc3339(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def spread(trace: TraceSpec, run: str, n: int, deep: bool) -> None:
    """TraceSpec's spans and logs are a microsecond apart, finer than its float log times: place
    them milliseconds apart, with exact times, so their order on screen is known. Each span's
    first log is 100us after its start; the root's second log comes after all its children."""
    base = time.time_ns() - 30_000 * MS + n * 100 * MS
    times = DEEP_SPAN_TIMES if deep else SPAN_TIMES
    if deep:
        trace.spans[2].parent_span_id = trace.spans[1].span_id
    trace.lines = []
    for c, (span, (start, end)) in enumerate(zip(trace.spans, times, strict=True)):
        span.start_time_unix_nano, span.end_time_unix_nano = base + start * MS, base + end * MS
        log_at = [span.start_time_unix_nano + MS // 10, span.start_time_unix_nano + MS // 5]
        if c == 0:
            log_at[1] = base + 9 * MS + MS // 2
        for k, at in enumerate(log_at):
            line = {
                "@timestamp": rfc3339(at),
                "level": "error" if k else "info",
                "trace_id": trace.trace_id.hex(),
                "span_id": span.span_id.hex(),
                "message": f"{run} log {n}.{c}.{k}",
            }
            trace.lines.append(orjson.dumps(line))


def follower(service: str) -> tuple[subprocess.Popen[bytes], queue.Queue[bytes]]:
    """`tether logs --follow` as a process, and a queue its output lines arrive in as printed."""
    process = subprocess.Popen(
        [TETHER, "logs", "--follow", "--service", service, "--interval", "0.5", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue[bytes] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def _indentation(line: str) -> int:
    """The column where a row's text starts, after the time offset and the tree guides."""
    match = re.match(r"\s*\+\S+\s+[│├└─ ]*", line)
    assert match is not None, line
    return match.end()


def _message(line: bytes) -> str:
    return str(orjson.loads(line)["message"])


@pytest_asyncio.fixture(scope="module")
async def indexed(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Indexed]:
    """Traces produced through a real collector, waited for in all three aliases. The collector is
    stopped before the tests run: each test's leftover processes are reaped when it ends."""
    logs_topic, spans_topic, run = new_topics("query")
    root = tmp_path_factory.mktemp("query")
    await create_topics(stack, logs_topic, spans_topic)
    service = f"svc-{run}"
    traces = [TraceSpec.make(n, run=run) for n in range(TRACES)]
    for n, trace in enumerate(traces):
        trace.service = service
        spread(trace, run, n, deep=n == 0)
    collector = CollectorProcess(stack, root, logs_topic, spans_topic, group=run, wait_seconds=1)
    collector.start()
    collector.wait_assigned()
    async with Producer(stack, logs_topic, spans_topic) as producer:
        for trace in traces:
            await producer.spans(trace.span_request(trace.spans))
            await producer.lines(trace.lines)
    ids = [trace.trace_id.hex() for trace in traces]
    spans = await wait_for_count(stack, "tether-spans", {"terms": {"trace.id": ids}}, 3 * TRACES)
    logs = await wait_for_count(stack, "tether-logs", {"terms": {"trace.id": ids}}, 6 * TRACES)
    summaries = await wait_for_count(stack, "tether-traces", {"terms": {"trace.id": ids}}, TRACES)
    assert collector.stop() == 0, collector.tail()
    assert (len(spans), len(logs), len(summaries)) == (3 * TRACES, 6 * TRACES, TRACES)
    yield Indexed(run, service, traces, logs_topic, spans_topic, run, root)


async def test_trace_draws_every_span_and_log_parents_first(indexed: Indexed) -> None:
    trace = indexed.traces[0]
    result = tether("trace", trace.trace_id.hex())
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "span / log" in line)
    assert trace.trace_id.hex() in lines[0] and "ERROR" in lines[0]
    assert f"http://127.0.0.1:16686/trace/{trace.trace_id.hex()}" in result.stdout

    def at(text: str) -> int:
        (index,) = [i for i, line in enumerate(lines) if text in line and i > header]
        return index

    root, child, grandchild = (at(f"{indexed.run} op 0.{c} ") for c in range(3))
    assert root < child < grandchild  # parents before children
    indent = [_indentation(lines[i]) for i in (root, child, grandchild)]
    assert indent[1] - indent[0] == 3 and indent[2] - indent[1] == 3
    assert f"✗ {indexed.run} op 0.1 ERROR" in lines[child]  # op 0.1 is the error span
    assert "ERROR" not in lines[root] + lines[grandchild] and "✗" not in lines[root] + lines[grandchild]
    # Each span's logs sit beneath it, merged in time with its children: the root's second log
    # comes after its child spans.
    order = [
        root,
        at(f"{indexed.run} log 0.0.0"),
        child,
        at(f"{indexed.run} log 0.1.0"),
        at(f"{indexed.run} log 0.1.1"),
        grandchild,
        at(f"{indexed.run} log 0.2.0"),
        at(f"{indexed.run} log 0.2.1"),
        at(f"{indexed.run} log 0.0.1"),
    ]
    assert order == sorted(order), result.stdout
    assert "ERROR" in lines[at(f"{indexed.run} log 0.1.1")]
    assert "logs without a span" not in result.stdout


async def test_trace_json_has_the_spans_with_their_logs(indexed: Indexed) -> None:
    trace = indexed.traces[0]
    result = tether("trace", trace.trace_id.hex(), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    summary = document["summary"]
    assert (summary["span_count"], summary["error_count"], summary["log_count"]) == (3, 1, 6)
    assert summary["root"] == {"service": indexed.service, "operation": f"{indexed.run} op 0.0"}
    spans = document["spans"]
    assert [s["span_id"] for s in spans] == [s.span_id.hex() for s in trace.spans]
    position = {s["span_id"]: i for i, s in enumerate(spans)}
    for span in spans[1:]:
        assert position[span["parent_id"]] < position[span["span_id"]]
    assert [s["depth"] for s in spans] == [0, 1, 2]
    assert [s["status"] for s in spans] == ["UNSET", "ERROR", "UNSET"]
    for c, span in enumerate(spans):
        assert [log["message"] for log in span["logs"]] == [f"{indexed.run} log 0.{c}.{k}" for k in (0, 1)]
        assert [log["level"] for log in span["logs"]] == ["info", "error"]
    assert document["orphan_logs"] == [] and document["notes"] == []
    # Bounded reads say what they left out.
    cut = json.loads(tether("trace", trace.trace_id.hex(), "--json", "--max-spans", "2").stdout)
    assert [s["span_id"] for s in cut["spans"]] == [s.span_id.hex() for s in trace.spans[:2]]
    assert cut["notes"] == ["showing the first 2 of 3 spans (by start time)"]
    # The last span's logs have no span to sit under now.
    assert [log["message"] for log in cut["orphan_logs"]] == [f"{indexed.run} log 0.2.{k}" for k in (0, 1)]


async def test_unknown_trace_bad_id_and_unreachable_elasticsearch(indexed: Indexed) -> None:
    unknown = os.urandom(16).hex()
    result = tether("trace", unknown)
    assert result.returncode == 1
    assert f"no trace {unknown} in tether-traces, tether-spans or tether-logs" in result.stderr
    result = tether("trace", "not-a-trace-id")
    assert result.returncode == 2 and "invalid trace id" in result.stderr
    result = tether("logs", "--since", "last tuesday")
    assert result.returncode == 2 and "invalid --since" in result.stderr
    closed = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    for args in (("trace", indexed.traces[0].trace_id.hex()), ("logs", "--level", "error")):
        result = tether(*args, es_url=closed)
        assert result.returncode == 3, result
        assert result.stderr.strip() == f"tether: cannot reach Elasticsearch at {closed} (connection refused)"
        assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


async def test_logs_by_service_and_level(indexed: Indexed) -> None:
    expected = {f"{indexed.run} log {n}.{c}.1" for n in range(TRACES) for c in range(3)}
    result = tether("logs", "--service", indexed.service, "--level", "error", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected) and {_message(line.encode()) for line in lines} == expected
    assert {orjson.loads(line)["service"] for line in lines} == {indexed.service}
    times = [orjson.loads(line)["@timestamp"] for line in lines]
    assert times == sorted(times)  # oldest first, like a log file
    text = tether("logs", "--service", indexed.service, "--level", "ERROR", "--since", "1d")
    assert text.returncode == 0, text.stderr
    assert len(text.stdout.splitlines()) == len(expected)
    for trace in indexed.traces:
        assert f"http://127.0.0.1:16686/trace/{trace.trace_id.hex()}" in text.stdout
    # --trace and free text narrow it down.
    one = indexed.traces[1].trace_id.hex()
    by_trace = tether("logs", "--trace", one, "--json")
    assert {_message(line.encode()) for line in by_trace.stdout.splitlines()} == {
        f"{indexed.run} log 1.{c}.{k}" for c in range(3) for k in range(2)
    }
    by_text = tether("logs", f"{indexed.run} 2.1.0", "--json")
    assert [_message(line.encode()) for line in by_text.stdout.splitlines()] == [f"{indexed.run} log 2.1.0"]
    assert tether("logs", "--service", f"nobody-{indexed.run}").stdout == ""


async def test_follow_prints_logs_indexed_after_it_started(stack: Stack, indexed: Indexed) -> None:
    service = f"follow-{indexed.run}"
    collector = CollectorProcess(
        stack, indexed.root, indexed.logs_topic, indexed.spans_topic, group=indexed.group, name="follow"
    )
    collector.start()
    collector.wait_assigned()
    async with Producer(stack, indexed.logs_topic, indexed.spans_topic, agent_id="e2e-follow") as producer:

        async def produce(label: str) -> None:
            trace = TraceSpec(os.urandom(16), service)
            now = time.time_ns()
            trace.spans.append(
                Span(
                    trace_id=trace.trace_id,
                    span_id=os.urandom(8),
                    name=f"{indexed.run} {label}",
                    start_time_unix_nano=now,
                    end_time_unix_nano=now + 1_000_000,
                    status=Status(code=Status.STATUS_CODE_ERROR),
                )
            )
            line = {
                "@timestamp": now / 1e9,
                "level": "error",
                "trace_id": trace.trace_id.hex(),
                "span_id": trace.spans[0].span_id.hex(),
                "message": f"{indexed.run} {label}",
            }
            await producer.spans(trace.span_request(trace.spans))
            await producer.lines([orjson.dumps(line)])

        await produce("before")
        query = {"term": {"service.name": service}}
        assert len(await wait_for_count(stack, "tether-logs", query, 1, within=60)) == 1

        process, lines = follower(service)
        try:
            # What was there already comes first, which also says the follower is running.
            assert _message(await asyncio.to_thread(lines.get, timeout=30)) == f"{indexed.run} before"
            await produce("after")
            followed = await asyncio.to_thread(lines.get, timeout=60)
            assert _message(followed) == f"{indexed.run} after"
            assert orjson.loads(followed)["service"] == service
            assert process.poll() is None  # still following
            with pytest.raises(queue.Empty):  # and it shows each log once
                await asyncio.to_thread(lines.get, timeout=3)
        finally:
            process.terminate()
            process.wait(timeout=10)
            assert collector.stop() == 0, collector.tail()
        assert process.stderr is not None and b"Traceback" not in process.stderr.read()
