"""The collector against the real Kafka, Elasticsearch and Jaeger (issue: correlation tier)."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from tests.e2e.agent_harness import PARTITIONS
from tests.e2e.collector_harness import (
    CollectorProcess,
    Producer,
    TraceSpec,
    create_topics,
    new_topics,
    search,
    wait_for_count,
)
from tether.schemas.records import ATTR_AGENT_ID, ATTR_RECORD_ID, FILE_SCOPE
from tether.stack import Stack

pytestmark = pytest.mark.stack


def _jaeger_span_ids(stack: Stack, trace_id: str) -> set[str]:
    with urllib.request.urlopen(f"{stack.jaeger.query_url}/api/traces/{trace_id}", timeout=10) as response:
        (trace,) = json.loads(response.read())["data"]
    return {span["spanID"] for span in trace["spans"]}


def _once(hits: list[dict[str, Any]], field: str = "message") -> Counter[str]:
    """Copies per content (message for logs, span id for spans): every value must be 1."""
    return Counter(str(_get(hit["_source"], field)) for hit in hits)


def _get(source: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        source = source[part]
    return source


async def test_out_of_order_late_and_untraced(stack: Stack, tmp_path: Path) -> None:
    logs_topic, spans_topic, run = new_topics("corr")
    await create_topics(stack, logs_topic, spans_topic)
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=2)
    collector.start()
    collector.wait_assigned()
    traces = [TraceSpec.make(n, run=run) for n in range(30)]
    late = {trace.trace_id for trace in traces[:5]}  # their last child span comes after the window
    order = list(range(30))
    random.Random(7).shuffle(order)
    async with Producer(stack, logs_topic, spans_topic) as producer:
        for n in order:
            trace = traces[n]
            spans_now = trace.spans[:-1] if trace.trace_id in late else trace.spans
            if n % 2:  # logs before their spans, and the other way round
                await producer.lines(trace.lines)
                await producer.spans(trace.span_request(spans_now))
            else:
                await producer.spans(trace.span_request(spans_now))
                await producer.lines(trace.lines)
        await producer.lines(
            [orjson.dumps({"level": "warn", "message": f"{run} untraced {k}"}) for k in range(3)]
        )
        await asyncio.sleep(6)  # the late traces are emitted without their last span
        for trace in traces[:5]:
            await producer.spans(trace.span_request(trace.spans[-1:]))

    trace_ids = [trace.trace_id.hex() for trace in traces]
    spans = await wait_for_count(stack, "tether-spans", {"terms": {"trace.id": trace_ids}}, 90)
    logs = await wait_for_count(stack, "tether-logs", {"match_phrase": {"message": run}}, 183)
    summaries = await wait_for_count(stack, "tether-traces", {"terms": {"trace.id": trace_ids}}, 30)
    for _ in range(30):  # the late spans' summary updates
        if all(s["_source"]["trace"]["span_count"] == 3 for s in summaries):
            break
        await asyncio.sleep(1)
        summaries = await search(stack, "tether-traces", {"terms": {"trace.id": trace_ids}})
    metrics = collector.metrics()
    assert collector.stop() == 0, collector.tail()

    assert len(spans) == 90 and set(_once(spans, "span.id").values()) == {1}
    assert len(logs) == 183 and set(_once(logs).values()) == {1}
    by_result = Counter(hit["_source"]["tether"]["correlation"] for hit in logs)
    # Logs of the 5 late spans were emitted with their trace but without their span, then written
    # again joined to it when it came (repaired from the recent-trace cache).
    assert by_result == {"span": 180, "untraced": 3}, by_result
    assert metrics["tether_collector_repaired_logs_total"] == 10
    for hit in logs:
        source = hit["_source"]
        if source["tether"]["correlation"] == "span":
            assert source["span"]["name"].startswith(f"{run} op ") and source["service"]["name"]
    hit_rate = by_result["span"] / (len(logs) - by_result["untraced"])
    print(f"correlation hit rate: {hit_rate:.3f} ({by_result['span']}/{len(logs) - by_result['untraced']})")
    assert len(summaries) == 30
    for summary in summaries:
        trace = summary["_source"]["trace"]
        n = int(trace["root"]["operation"].rsplit(" ", 1)[1].split(".")[0])
        assert (trace["span_count"], trace["log_count"], trace["complete"]) == (3, 6, True)
        assert trace["error_count"] == (1 if n % 5 == 0 else 0)
        assert trace["logs_by_level"] == {"info": 3, "error": 3}
        assert trace["root"]["operation"] == f"{run} op {n}.0"
    assert metrics['tether_collector_late_arrivals_total{kind="span"}'] == 5
    for trace in traces:
        expected = {span.span_id.hex() for span in trace.spans}
        assert await asyncio.to_thread(_jaeger_span_ids, stack, trace.trace_id.hex()) == expected


async def test_two_collectors_share_the_partitions(stack: Stack, tmp_path: Path) -> None:
    logs_topic, spans_topic, run = new_topics("pair")
    await create_topics(stack, logs_topic, spans_topic)
    first = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, name="first")
    second = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, name="second")
    first.start()
    second.start()
    first.wait_assigned()
    second.wait_assigned()
    await asyncio.sleep(3)  # let the group settle on two members
    traces = [TraceSpec.make(n, run=run) for n in range(80)]
    async with Producer(stack, logs_topic, spans_topic) as producer:
        for trace in traces:
            await producer.spans(trace.span_request(trace.spans))
            await producer.lines(trace.lines)
    logs = await wait_for_count(stack, "tether-logs", {"match_phrase": {"message": run}}, 480)
    trace_ids = [trace.trace_id.hex() for trace in traces]
    spans = await wait_for_count(stack, "tether-spans", {"terms": {"trace.id": trace_ids}}, 240)
    first_metrics, second_metrics = first.metrics(), second.metrics()
    assert first.stop() == 0 and second.stop() == 0
    assert len(logs) == 480 and set(_once(logs).values()) == {1}
    assert len(spans) == 240 and set(_once(spans, "span.id").values()) == {1}
    assert {hit["_source"]["tether"]["correlation"] for hit in logs} == {"span"}
    # Both members did work: each consumed records of both topics.
    for metrics in (first_metrics, second_metrics):
        assert sum(v for k, v in metrics.items() if k.startswith("tether_collector_records_in_total")) > 0


async def _settled(
    stack: Stack, run: str, traces: list[TraceSpec]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's logs and spans once every log is in and duplicates have had time to show up."""
    query = {"match_phrase": {"message": run}}
    await wait_for_count(stack, "tether-logs", query, sum(len(trace.lines) for trace in traces))
    await asyncio.sleep(3)  # anything duplicated would show up by now
    trace_ids = [trace.trace_id.hex() for trace in traces]
    return (
        await search(stack, "tether-logs", query),
        await search(stack, "tether-spans", {"terms": {"trace.id": trace_ids}}),
    )


async def test_a_collector_stalled_past_its_session_keeps_serving(stack: Stack, tmp_path: Path) -> None:
    """A collector frozen for longer than the group's session timeout (a stop-the-world pause,
    a starved VM) finds the group moved on: its commits are refused. It must log that, rejoin and go
    on, while the member that took over replays without visible duplicates."""
    logs_topic, spans_topic, run = new_topics("stall")
    await create_topics(stack, logs_topic, spans_topic)
    stalled = CollectorProcess(
        stack, tmp_path, logs_topic, spans_topic, group=run, name="stalled", wait_seconds=3
    )
    other = CollectorProcess(
        stack, tmp_path, logs_topic, spans_topic, group=run, name="other", wait_seconds=3
    )
    stalled.start()
    stalled.wait_assigned()
    traces = [TraceSpec.make(n, run=run) for n in range(60)]
    async with Producer(stack, logs_topic, spans_topic) as producer:
        for trace in traces[:30]:
            await producer.spans(trace.span_request(trace.spans))
            await producer.lines(trace.lines)
        await asyncio.sleep(1)  # consumed, held in the correlation window, not yet indexed
        assert stalled.process is not None
        stalled.process.send_signal(signal.SIGSTOP)
        other.start()
        other.wait_assigned()
        await asyncio.sleep(12)  # past the 10 s session timeout: the group now belongs to `other`
        stalled.process.send_signal(signal.SIGCONT)
        for trace in traces[30:]:
            await producer.spans(trace.span_request(trace.spans))
            await producer.lines(trace.lines)
    logs, spans = await _settled(stack, run, traces)
    assert stalled.process.poll() is None, stalled.tail()  # still serving
    assert stalled.stop() == 0 and other.stop() == 0, stalled.tail()
    assert len(logs) == 360 and set(_once(logs).values()) == {1}
    assert len(spans) == 180 and set(_once(spans, "span.id").values()) == {1}


async def test_kill_9_and_restart_loses_and_duplicates_nothing(stack: Stack, tmp_path: Path) -> None:
    logs_topic, spans_topic, run = new_topics("kill")
    await create_topics(stack, logs_topic, spans_topic)
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=1)
    collector.start()
    collector.wait_assigned()
    traces = [TraceSpec.make(n, run=run) for n in range(120)]
    async with Producer(stack, logs_topic, spans_topic) as producer:
        for n, trace in enumerate(traces):
            await producer.spans(trace.span_request(trace.spans))
            await producer.lines(trace.lines)
            if n == 60:
                collector.kill9()  # mid-stream, with traces held in its window
                collector.start()
            await asyncio.sleep(0.02)
    logs, spans = await _settled(stack, run, traces)
    assert collector.stop() == 0, collector.tail()
    assert len(logs) == 720 and set(_once(logs).values()) == {1}
    assert len({hit["_id"] for hit in logs}) == 720
    assert len(spans) == 360 and set(_once(spans, "span.id").values()) == {1}


async def test_elasticsearch_down_for_30_seconds_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    logs_topic, spans_topic, run = new_topics("esdown")
    await create_topics(stack, logs_topic, spans_topic)
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=1)
    collector.start()
    collector.wait_assigned()
    traces = [TraceSpec.make(n, run=run) for n in range(40)]
    async with Producer(stack, logs_topic, spans_topic) as producer:
        for trace in traces[:20]:
            await producer.spans(trace.span_request(trace.spans))
            await producer.lines(trace.lines)
        await wait_for_count(stack, "tether-logs", {"match_phrase": {"message": run}}, 120, within=60)
        stack.elasticsearch.process.stop()
        try:
            for trace in traces[20:]:
                await producer.spans(trace.span_request(trace.spans))
                await producer.lines(trace.lines)
            await asyncio.sleep(30)
            assert collector.process is not None and collector.process.poll() is None, collector.tail()
            assert collector.metrics()['tether_collector_bulk_retries_total{reason="unavailable"}'] > 0
        finally:
            stack.elasticsearch.start()
            await asyncio.to_thread(stack.elasticsearch.wait_healthy, 180)
    logs = await wait_for_count(stack, "tether-logs", {"match_phrase": {"message": run}}, 240)
    assert collector.stop() == 0, collector.tail()
    assert len(logs) == 240 and set(_once(logs).values()) == {1}


async def test_a_document_that_cannot_be_indexed_goes_to_the_dead_letter_index(
    stack: Stack, tmp_path: Path
) -> None:
    logs_topic, spans_topic, run = new_topics("dlq")
    await create_topics(stack, logs_topic, spans_topic)
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=1)
    collector.start()
    collector.wait_assigned()
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(30):  # deeper than the flattened field's limit of 20: refused for good
        nested = {"deeper": nested}
    good = [orjson.dumps({"level": "info", "message": f"{run} good {k}"}) for k in range(5)]
    bad = orjson.dumps({"level": "info", "message": f"{run} too deep", "data": nested})
    async with Producer(stack, logs_topic, spans_topic, agent_id=run) as producer:
        await producer.lines([*good[:2], bad, *good[2:]])  # one record, one bulk request
    logs = await wait_for_count(stack, "tether-logs", {"match_phrase": {"message": run}}, 5)
    letters = await wait_for_count(stack, "tether-deadletter", {"prefix": {"deadletter.id": f"{run}:"}}, 1)
    metrics = collector.metrics()
    assert collector.stop() == 0, collector.tail()
    assert sorted(hit["_source"]["message"] for hit in logs) == sorted(f"{run} good {k}" for k in range(5))
    (letter,) = letters
    assert letter["_source"]["deadletter"]["status"] == 400
    assert "flattened" in letter["_source"]["deadletter"]["reason"]
    assert letter["_source"]["deadletter"]["error_type"] == "document_parsing_exception"
    assert orjson.loads(letter["_source"]["deadletter"]["original"])["message"] == f"{run} too deep"
    assert metrics['tether_collector_deadlettered_total{index="tether-logs"}'] == 1


async def test_file_lines_that_are_no_json_object_are_indexed_as_messages(
    stack: Stack, tmp_path: Path
) -> None:
    """Records of the file scope not flagged as parse errors whose line starts as an object and is
    none, nests deeper than the encoder allows, or is not a string raised out of the collector (or
    failed its delivery and stalled the partition's commits). Each is now a plain message, counted.
    Lines that do not start as an object (empty, an array, text) are plain messages, no error."""
    logs_topic, spans_topic, run = new_topics("poison")
    await create_topics(stack, logs_topic, spans_topic)
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=1)
    collector.start()
    collector.wait_assigned()
    deep = '{"message":"deep","d":' + "[" * 300 + "]" * 300 + "}"
    bodies = {
        "empty": AnyValue(string_value=""),
        "array": AnyValue(string_value="[1,2]"),
        "broken": AnyValue(string_value='{"message": "cut'),
        "deep": AnyValue(string_value=deep),
        "int": AnyValue(int_value=7),
    }
    records = [
        LogRecord(
            time_unix_nano=time.time_ns(),
            body=body,
            attributes=[KeyValue(key=ATTR_RECORD_ID, value=AnyValue(string_value=f"{run}-bad:{name}"))],
        )
        for name, body in bodies.items()
    ]
    bad = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=[KeyValue(key=ATTR_AGENT_ID, value=AnyValue(string_value=run))]),
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=FILE_SCOPE), log_records=records)],
            )
        ]
    )
    async with Producer(stack, logs_topic, spans_topic, agent_id=run) as producer:
        await producer.lines(
            [orjson.dumps({"level": "info", "message": f"{run} before {k}"}) for k in range(3)]
        )
        for partition in range(PARTITIONS):  # every partition gets one: none may stall
            await producer.log_request(bad, partition)
        await producer.lines(
            [orjson.dumps({"level": "info", "message": f"{run} after {k}"}) for k in range(3)]
        )
    good = await wait_for_count(stack, "tether-logs", {"match_phrase": {"message": run}}, 6)
    unparsed = await wait_for_count(stack, "tether-logs", {"prefix": {"tether.record_id": f"{run}-bad:"}}, 5)
    await asyncio.sleep(2)  # commits follow the acknowledgements
    metrics = collector.metrics()
    assert collector.process is not None and collector.process.poll() is None, collector.tail()
    assert collector.stop() == 0, collector.tail()
    assert sorted(hit["_source"]["message"] for hit in good) == sorted(
        f"{run} {when} {k}" for when in ("before", "after") for k in range(3)
    )
    by_id = {hit["_id"]: hit["_source"] for hit in unparsed}  # one id per record, however often sent
    assert {
        i: (s["message"], s["tether"]["parse_error"], s["tether"].get("parse_error_reason"))
        for i, s in by_id.items()
    } == {
        f"{run}-bad:empty": ("", False, None),
        f"{run}-bad:array": ("[1,2]", False, None),
        f"{run}-bad:broken": ('{"message": "cut', True, "not_json"),
        f"{run}-bad:deep": (deep, True, "too_deep"),
        f"{run}-bad:int": ("7", True, "not_a_string"),
    }
    for reason in ("not_json", "too_deep", "not_a_string"):
        assert metrics[f'tether_collector_unparsed_lines_total{{reason="{reason}"}}'] == PARTITIONS
    assert not [k for k in metrics if k.startswith("tether_collector_deadlettered_total")]
    # nothing held back: every partition's commit passed the bad records
    assert metrics["tether_collector_inflight_documents"] == 0
    committed, ends = await _commits_and_ends(stack, run, logs_topic)
    assert committed == ends


async def test_records_that_are_no_otlp_request_are_dead_lettered_whole(stack: Stack, tmp_path: Path) -> None:
    """A Kafka record that does not decode as an OTLP export request was skipped (only counted):
    accepted and lost. It is now a dead letter with its bytes, and its offset is committed only
    after that letter is indexed; the records after it are indexed as usual."""
    logs_topic, spans_topic, run = new_topics("undecodable")
    await create_topics(stack, logs_topic, spans_topic)
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=1)
    collector.start()
    collector.wait_assigned()
    junk = {logs_topic: b"\x0a\xff\xff\xff\x0f" + run.encode(), spans_topic: b"\xff\xfe" + run.encode()}
    async with Producer(stack, logs_topic, spans_topic, agent_id=run) as producer:
        offsets = {
            (topic, partition): await producer.raw(topic, value, partition)
            for topic, value in junk.items()
            for partition in (0, PARTITIONS - 1)
        }
        await producer.lines(
            [orjson.dumps({"level": "info", "message": f"{run} after {k}"}) for k in range(3)]
        )
    expected = {
        f"{topic}:{partition}:{offset}": (topic, "base64", junk[topic])
        for (topic, partition), offset in offsets.items()
    }
    after = await wait_for_count(stack, "tether-logs", {"match_phrase": {"message": run}}, 3)
    letters = await wait_for_count(stack, "tether-deadletter", {"ids": {"values": list(expected)}}, 4)
    ours = {hit["_id"]: hit["_source"]["deadletter"] for hit in letters}
    await asyncio.sleep(2)  # commits follow the acknowledgements
    metrics = collector.metrics()
    assert collector.process is not None and collector.process.poll() is None, collector.tail()
    assert collector.stop() == 0, collector.tail()
    assert len(after) == 3
    assert {
        i: (letter["index"], letter["encoding"], base64.b64decode(letter["original"]))
        for i, letter in ours.items()
    } == expected
    assert all("not an OTLP" in letter["reason"] for letter in ours.values())
    assert metrics['tether_collector_deadlettered_total{index="undecodable-logs"}'] == 2
    assert metrics['tether_collector_deadlettered_total{index="undecodable-spans"}'] == 2
    assert metrics["tether_collector_inflight_documents"] == 0
    for topic in junk:  # every partition's commit passed the bad records (none where nothing was sent)
        committed, ends = await _commits_and_ends(stack, run, topic)
        assert committed == {p: end or None for p, end in ends.items()}


async def _commits_and_ends(
    stack: Stack, group: str, topic: str
) -> tuple[dict[int, int | None], dict[int, int]]:
    """What `group` committed for each partition of `topic` (None: nothing), and each one's end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka.bootstrap, group_id=group)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        committed = {tp.partition: await consumer.committed(tp) for tp in partitions}
        return committed, {tp.partition: ends[tp] for tp in partitions}
    finally:
        await consumer.stop()
