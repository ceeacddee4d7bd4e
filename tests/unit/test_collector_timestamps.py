"""collector.timestamps: documents stamped far from their arrival go to the arrival's daily index,
the original kept and flagged, on both document paths and for spans; replays decide alike."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.unit.collector_fakes import (
    FakeConsumer,
    FakeElasticsearch,
    config,
    log_record,
    poll,
    span_request,
    spin,
)
from tether.collector.correlate import Output
from tether.collector.documents import (
    LogDoc,
    iso_timestamp,
    log_documents,
    native_log_documents,
    span_documents,
)
from tether.collector.metrics import CollectorMetrics
from tether.collector.service import Collector
from tether.collector.sinks.bulk import source_json
from tether.collector.timestamps import TimestampWindow
from tether.schemas.indices import LOGS_ALIAS, daily_index
from tether.schemas.log_fields import default_mapping

ARRIVAL = 1_764_930_000_000_000_000  # 2025-12-05T10:20:00Z
DAY = 86_400_000_000_000
WINDOW = TimestampWindow.of(max_age_days=30, max_ahead_hours=24)


def _log_value(time_ns: int) -> bytes:
    record = log_record(0)
    request = ExportLogsServiceRequest.FromString(record.value)
    request.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano = time_ns
    return request.SerializeToString()


def _documents(time_ns: int, native: bool) -> list[LogDoc]:
    value = _log_value(time_ns)
    docs = native_log_documents(value, default_mapping()) if native else None
    return (
        docs
        if docs is not None
        else log_documents(ExportLogsServiceRequest.FromString(value), default_mapping())
    )


def _indexed(doc: LogDoc) -> dict[str, Any]:
    """The document's JSON as the sink sends it."""
    output = Output(LOGS_ALIAS, doc.doc_id, doc.timestamp_ns, doc.source, None, doc.head)
    source: dict[str, Any] = orjson.loads(source_json(output))
    return source


@pytest.mark.parametrize("native", [False, True], ids=["python", "native"])
@pytest.mark.parametrize(
    ("time_ns", "moved"),
    [
        (ARRIVAL, False),
        (ARRIVAL - 30 * DAY, False),  # the window's edges are inside
        (ARRIVAL + DAY, False),
        (ARRIVAL - 30 * DAY - 1, True),
        (ARRIVAL + DAY + 1, True),
        (86_400_000_000_000, True),  # 1970
        (4_102_444_800_000_000_000, True),  # 2100
    ],
)
def test_log_documents_outside_the_window_take_the_arrival_time(
    time_ns: int, moved: bool, native: bool
) -> None:
    [doc] = _documents(time_ns, native)
    assert (doc.head is not None) is native
    assert WINDOW.bound([doc], ARRIVAL) == int(moved)
    source = _indexed(doc)
    tether = source["tether"]
    assert isinstance(tether, dict)
    if moved:
        assert doc.timestamp_ns == ARRIVAL and source["@timestamp"] == iso_timestamp(ARRIVAL)
        assert tether["original_timestamp"] == iso_timestamp(time_ns)
        assert tether["timestamp_out_of_range"] is True
        assert daily_index(LOGS_ALIAS, doc.timestamp_ns) == "tether-logs-2025.12.05"
    else:
        assert doc.timestamp_ns == time_ns and source["@timestamp"] == iso_timestamp(time_ns)
        assert "original_timestamp" not in tether and "timestamp_out_of_range" not in tether
    assert source["message"] == "hello"  # the rest of the document is untouched


def test_spans_too() -> None:
    [doc] = span_documents(span_request(b"\x01" * 16, b"\x02" * 8))
    doc.source["@timestamp"] = iso_timestamp(0)
    doc.timestamp_ns = 1
    assert WINDOW.bound([doc], ARRIVAL) == 1
    assert (doc.timestamp_ns, doc.source["@timestamp"]) == (ARRIVAL, iso_timestamp(ARRIVAL))
    assert doc.source["tether"] == {"original_timestamp": iso_timestamp(1), "timestamp_out_of_range": True}


def test_a_record_without_a_timestamp_is_left_alone() -> None:
    [doc] = _documents(1, native=False)
    assert WINDOW.bound([doc], 0) == 0 and doc.timestamp_ns == 1


async def test_the_collector_measures_against_the_kafka_record_and_counts() -> None:
    consumer, es = FakeConsumer(), FakeElasticsearch()
    c = Collector(config(), consumer, es, None, CollectorMetrics(), commit_interval=0)
    bogus = dataclasses.replace(
        log_record(0), value=_log_value(86_400_000_000_000), timestamp=ARRIVAL // 10**6
    )
    # the same record read again (a replay) lands in the same index, whenever it is read
    for _ in range(2):
        consumer.polls.append(poll(bogus))
        await c.poll()
        await spin()
    logs = [r for r in es.received if r.alias == LOGS_ALIAS]
    assert [r.timestamp_ns for r in logs] == [ARRIVAL, ARRIVAL]
    counted = c.metrics.registry.get_sample_value(
        "tether_collector_timestamps_out_of_range_total", {"signal": "logs"}
    )
    assert counted == 2
