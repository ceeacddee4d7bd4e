"""An agent without Kafka: batches split for a guessed partition count, split again for the live one.

Invariant: whatever count a batch was split for (1 = unsplit, the remembered one, another, or none
recorded by an older spool), what reaches the sink has every traced item in partition
trace id mod the live count, in both topics, each item exactly once, batches in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.unit.agent_fakes import FakeSink, wait_until
from tests.unit.otlp_receivers import span, traces_request
from tether.agent.batch import Batch
from tether.agent.chunks import PythonChunkEncoder
from tether.agent.config import SpoolConfig
from tether.agent.delivery import Delivery
from tether.agent.kafka_connector import KafkaConnector
from tether.agent.metrics import AgentMetrics
from tether.agent.partition_memory import PartitionMemory
from tether.agent.repartition import repartition
from tether.agent.sinks.kafka import PartitionMismatchError
from tether.agent.split import split_traces_bytes
from tether.agent.spool import Spool, decode_batch
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import ATTR_RECORD_OFFSET, partition_for_trace

LIVE = 4


def _traces_on_every_partition(count: int) -> list[bytes]:
    """Random trace ids, redrawn until they fall on every partition of LIVE (twelve random ones miss
    one of four partitions about one run in ten)."""
    while True:
        traces = [os.urandom(16) for _ in range(count)]
        if {partition_for_trace(t, LIVE) for t in traces} == set(range(LIVE)):
            return traces


TRACES = _traces_on_every_partition(12)


def _log_batch(split_for: int, first_offset: int = 0, lines: int = 40) -> Batch:
    """File lines as the file source encodes them, split for `split_for` (0: as a v1 spool file,
    which did not record its count, holds them: split for some count, here 3)."""
    encoder = PythonChunkEncoder(
        agent_id="a", partitions=split_for or 3, mapping=default_mapping(), max_line_bytes=1024
    )
    text = b"".join(
        json.dumps(
            {"msg": f"line {n}", **({"trace_id": TRACES[n % len(TRACES)].hex()} if n % 5 else {})}
        ).encode()
        + b"\n"
        for n in range(lines)
    )
    # Offsets of a batch start at first_offset: the test tells batches apart by them.
    chunk = encoder.encode(
        text, first_offset, fingerprint="f", path="/app.log", untraced_partition=0, observed_ns=1
    )
    return Batch("logs", chunk.records, chunk.lines, partitions=split_for)


def _span_batch(split_for: int, names: list[str]) -> Batch:
    request = traces_request(*(span(name, TRACES[n % len(TRACES)]) for n, name in enumerate(names)))
    split = split_traces_bytes(request.SerializeToString(), split_for or 3)
    return Batch("spans", split.records, split.total - split.rejected, partitions=split_for)


def _log_records(
    partition_records: dict[int, bytes] | list[tuple[int, bytes]],
) -> list[tuple[int, bytes, int]]:
    """(partition, trace id, offset) of every log record."""
    pairs = partition_records.items() if isinstance(partition_records, dict) else partition_records
    found = []
    for partition, value in pairs:
        for resource in ExportLogsServiceRequest.FromString(value).resource_logs:
            for scope in resource.scope_logs:
                for record in scope.log_records:
                    (offset,) = [a.value.int_value for a in record.attributes if a.key == ATTR_RECORD_OFFSET]
                    found.append((partition, record.trace_id, offset))
    return found


def _spans(pairs: list[tuple[int, bytes]]) -> list[tuple[int, bytes, str]]:
    """(partition, trace id, name) of every span."""
    return [
        (partition, s.trace_id, s.name)
        for partition, value in pairs
        for resource in ExportTraceServiceRequest.FromString(value).resource_spans
        for scope in resource.scope_spans
        for s in scope.spans
    ]


@pytest.mark.parametrize("split_for", [1, 3, 8, 0])
def test_a_batch_split_for_another_count_is_split_for_the_live_one(split_for: int) -> None:
    logs, spans = _log_batch(split_for), _span_batch(split_for, [f"s{n}" for n in range(30)])
    before_logs, before_spans = _log_records(logs.records), _spans(list(spans.records.items()))

    fitted_logs = repartition(logs, LIVE, untraced_partition=2)
    fitted_spans = repartition(spans, LIVE, untraced_partition=2)

    assert fitted_logs.partitions == fitted_spans.partitions == LIVE
    assert set(fitted_logs.records) | set(fitted_spans.records) <= set(range(LIVE))
    after_logs, after_spans = _log_records(fitted_logs.records), _spans(list(fitted_spans.records.items()))
    # the same items, each once
    assert sorted((t, o) for _, t, o in after_logs) == sorted((t, o) for _, t, o in before_logs)
    assert sorted((t, n) for _, t, n in after_spans) == sorted((t, n) for _, t, n in before_spans)
    assert (fitted_logs.items, fitted_spans.items) == (logs.items, spans.items)
    # invariant 3: a trace's logs and spans in partition trace id mod the live count
    for partition, trace_id, _ in after_logs + after_spans:
        assert partition == (partition_for_trace(trace_id, LIVE) if trace_id else 2)
    traced_partitions = {t: p for p, t, _ in after_logs if t}
    assert all(traced_partitions.get(t, p) == p for p, t, _ in after_spans)


def test_a_batch_split_for_the_live_count_is_sent_as_it_is() -> None:
    batch = _log_batch(LIVE)
    assert repartition(batch, LIVE, untraced_partition=0) is batch


def test_an_older_agent_s_spool_file_reads_as_count_unknown(tmp_path: Path) -> None:
    """Version 1 files (no count) are split again whatever the live count is."""
    batch = _log_batch(0)
    v1 = [b"TSPL\x01", struct.pack(">BII", 0, batch.items, len(batch.records))]
    for partition, value in batch.records.items():
        v1 += [struct.pack(">II", partition, len(value)), value]
    (tmp_path / f"{0:020d}.batch").write_bytes(b"".join(v1))
    head = Spool(tmp_path, 10**6, fsync=False).head()
    assert head is not None
    assert head[1] == batch  # partitions 0: not known
    assert repartition(head[1], 3, 0).partitions == 3  # even for the count it happened to use


def _delivery(tmp_path: Path, sink: FakeSink) -> tuple[Delivery, AgentMetrics]:
    metrics = AgentMetrics()
    config = SpoolConfig(spill_after_seconds=0.05, fsync="never")
    return Delivery(sink, config, tmp_path / "spool", metrics), metrics


async def test_without_kafka_batches_are_spooled_then_drained_in_order_split_for_the_live_count(
    tmp_path: Path,
) -> None:
    sink = FakeSink(partitions=0)  # not connected: no count known
    sink.up = False
    delivery, _ = _delivery(tmp_path, sink)
    await delivery.start()
    batches = []
    for n in range(8):  # unsplit (1) as an agent with no remembered count splits them
        batches.append(_log_batch(1, first_offset=n * 100_000))
        batches.append(_span_batch(1, [f"b{n}-s{k}" for k in range(5)]))
    receipts = [await delivery.submit(batch, accept_timeout=1) for batch in batches]
    await asyncio.wait_for(asyncio.gather(*(r.durable for r in receipts)), 5)
    assert len(delivery.spool) == len(batches)
    assert not any(r.acked.done() for r in receipts)
    assert sink.sent == []

    sink.partitions, sink.up = LIVE, True  # Kafka answers; the connector would kick delivery
    delivery.kick()
    await asyncio.wait_for(asyncio.gather(*(r.acked for r in receipts)), 10)
    await delivery.stop(1)

    logs = _log_records([(s.partition, s.value) for s in sink.sent if s.signal == "logs"])
    spans = _spans([(s.partition, s.value) for s in sink.sent if s.signal == "spans"])
    offsets = Counter(offset for _, _, offset in logs)
    expected = Counter(o for b in batches if b.signal == "logs" for _, _, o in _log_records(b.records))
    assert offsets == expected and max(offsets.values()) == 1  # all, each once
    assert Counter(name for _, _, name in spans) == Counter(
        name for b in batches if b.signal == "spans" for _, _, name in _spans(list(b.records.items()))
    )
    assert all(p == partition_for_trace(t, LIVE) for p, t, _ in logs + spans if t)
    # in order: the records of batch n (offsets n * 100_000 and up) all before those of n + 1
    batch_of_record = [
        offset // 100_000
        for s in sink.sent
        if s.signal == "logs"
        for _, _, offset in _log_records([(s.partition, s.value)])[:1]
    ]
    assert batch_of_record == sorted(batch_of_record)
    assert len(delivery.spool) == 0


async def test_a_spool_left_with_another_count_drains_split_for_the_live_one(tmp_path: Path) -> None:
    """The count remembered at start was 2; Kafka's topics have 4 by the time it answers."""
    sink = FakeSink(partitions=0)
    sink.up = False
    delivery, _ = _delivery(tmp_path, sink)
    await delivery.start()
    receipts = [await delivery.submit(_log_batch(2, first_offset=n * 100_000)) for n in range(3)]
    await asyncio.wait_for(asyncio.gather(*(r.durable for r in receipts)), 5)
    await delivery.stop(1)
    assert {decode_batch(p.read_bytes()).partitions for p in (tmp_path / "spool").glob("*.batch")} == {2}

    restarted = FakeSink(partitions=LIVE)  # the next start reaches Kafka
    delivery, _ = _delivery(tmp_path, restarted)
    await delivery.start()
    await wait_until(lambda: len(delivery.spool) == 0)
    await delivery.stop(1)
    logs = _log_records([(s.partition, s.value) for s in restarted.sent])
    assert len(logs) == 3 * 40 and len({o for _, _, o in logs}) == 3 * 40
    assert all(p == partition_for_trace(t, LIVE) for p, t, _ in logs if t)
    assert {p for p, _, _ in logs} == set(range(LIVE))


def test_the_partition_count_is_remembered_for_the_same_topics_only(tmp_path: Path) -> None:
    memory = PartitionMemory(tmp_path / "state", "l", "s")
    assert memory.recall() is None
    memory.remember(6)
    assert memory.recall() == 6
    assert PartitionMemory(tmp_path / "state", "l", "other").recall() is None
    memory.path.write_text("{not json")
    assert memory.recall() is None


class _UnreachableThenUp:
    """Stands in for KafkaSink.start: refused `failures` times, then connected with `partitions`."""

    def __init__(self, failures: int, partitions: int, error: Exception | None = None) -> None:
        self.failures, self.live, self.error = failures, partitions, error
        self.partitions = 0

    async def start(self) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError(
                "Unable to bootstrap from [('127.0.0.1', 1, <AddressFamily.AF_INET: 2>)]"
            )
        if self.error is not None:
            raise self.error
        self.partitions = self.live


async def test_the_connector_retries_naming_the_setting_then_remembers_and_announces_the_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = _UnreachableThenUp(failures=3, partitions=6)
    memory = PartitionMemory(tmp_path, "l", "s")
    announced: list[int] = []
    connector = KafkaConnector(sink, "kafka-1:9092", memory, announced.append, max_backoff_seconds=0.05)
    assert connector.not_ready_reason() is not None
    caplog.set_level(logging.WARNING, "tether.agent.kafka")
    task = asyncio.create_task(connector.run(asyncio.Event()))
    await wait_until(lambda: connector.attempts >= 1)
    reason = connector.not_ready_reason()
    assert reason is not None and "kafka.bootstrap_servers=kafka-1:9092" in reason and "bootstrap" in reason
    await asyncio.wait_for(task, 5)
    assert connector.connected and connector.not_ready_reason() is None
    assert announced == [6] and memory.recall() == 6 and connector.attempts == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("kafka.bootstrap_servers=kafka-1:9092" in r.getMessage() for r in warnings)


async def test_topics_with_different_counts_stop_the_agent(tmp_path: Path) -> None:
    sink = _UnreachableThenUp(failures=1, partitions=4, error=PartitionMismatchError("4 and 8"))
    stop = asyncio.Event()
    connector = KafkaConnector(
        sink, "k:9092", PartitionMemory(tmp_path, "l", "s"), lambda _: None, max_backoff_seconds=0.01
    )
    await asyncio.wait_for(connector.run(stop), 5)
    assert stop.is_set() and isinstance(connector.fatal, PartitionMismatchError)
    assert not connector.connected


async def test_an_error_that_is_no_connection_failure_stops_the_agent_instead_of_spooling_forever(
    tmp_path: Path,
) -> None:
    sink = _UnreachableThenUp(
        failures=0, partitions=4, error=TypeError("object of type 'NoneType' has no len()")
    )
    stop = asyncio.Event()
    connector = KafkaConnector(sink, "k:9092", PartitionMemory(tmp_path, "l", "s"), lambda _: None)
    await asyncio.wait_for(connector.run(stop), 5)
    assert stop.is_set() and isinstance(connector.fatal, TypeError)
