"""Deliveries: what a bulk in flight holds while Elasticsearch has not answered yet."""

from __future__ import annotations

import asyncio
import gc
import weakref

import orjson

from tests.unit.collector_fakes import FakeElasticsearch
from tether.collector.correlate import Output
from tether.collector.deliver import Deliveries, Delivery
from tether.collector.metrics import CollectorMetrics
from tether.collector.offsets import RecordAck


class Marker:
    """Something a document's dict tree holds, so a weak reference tells whether the tree lives."""

    def __str__(self) -> str:
        return "marker"


async def test_a_bulk_in_flight_holds_its_documents_encoded_not_as_dict_trees() -> None:
    elasticsearch = FakeElasticsearch(hold=True)
    deliveries = Deliveries(elasticsearch, None, CollectorMetrics(), max_concurrent=1, delivered=lambda: None)
    markers = [Marker() for _ in range(3)]
    alive = [weakref.ref(marker) for marker in markers]
    outputs: list[Output[RecordAck]] = [
        Output("tether-logs", f"id-{n}", 1_700_000_000_000_000_000, {"message": "m", "x": marker}, None)
        for n, marker in enumerate(markers)
    ]
    del markers
    await deliveries.start(Delivery(outputs=outputs))
    del outputs
    for _ in range(100):  # until the bulk is sent, and held unanswered
        if elasticsearch.calls:
            break
        await asyncio.sleep(0)
    gc.collect()
    assert [ref() for ref in alive] == [None, None, None]
    sent = elasticsearch.calls[0].payload
    assert [orjson.loads(document.json) for document in sent] == [{"message": "m", "x": "marker"}] * 3
    assert [document.doc_id for document in sent] == ["id-0", "id-1", "id-2"]
    elasticsearch.calls[0].answer()
    await deliveries.settle()
