"""Delivering documents to Elasticsearch and spans to Jaeger, then acknowledging their records.

A delivery indexes its documents and exports its span records at once; when both are acknowledged
(refused documents once their dead letters are indexed), every part it carried is done on its
record's RecordAck. At most `max_concurrent` deliveries are in flight: starting one more waits,
which holds back polling (backpressure) while keeping memory bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tether.collector.correlate import Output
from tether.collector.metrics import CollectorMetrics
from tether.collector.offsets import RecordAck
from tether.collector.sinks.bulk import EncodedDocument, Indexable, encode_documents
from tether.collector.sinks.elasticsearch import Rejection

log = logging.getLogger("tether.collector")


class DocumentSink(Protocol):
    """Where documents are indexed (ElasticsearchSink): `index` retries until each document is
    indexed or refused for good, and returns the refused ones for `deadletter`."""

    healthy: bool

    @property
    def write_blocked(self) -> bool:
        """True while Elasticsearch blocks writes and documents wait for the block to lift."""
        ...

    async def install_templates(self) -> None: ...
    async def index(self, requests: Sequence[Indexable]) -> list[Rejection]: ...
    async def deadletter(self, rejections: list[Rejection]) -> None: ...
    async def close(self) -> None: ...


class SpanSink(Protocol):
    """Where span records are exported as they came (JaegerSink): returns once they are accepted."""

    healthy: bool  # false while the export is refused for a reason the configuration must fix

    async def export(self, requests: list[ExportTraceServiceRequest]) -> None: ...
    async def close(self) -> None: ...


@dataclass(slots=True)
class Delivery:
    """Documents (at most `bulk_max_docs`) and the span records exported with them, each record
    with its acknowledgement (one part of it: the record's spans for Jaeger)."""

    outputs: list[Output[RecordAck]] = field(default_factory=list)
    span_records: list[tuple[ExportTraceServiceRequest, RecordAck]] = field(default_factory=list)
    # parts that end without a document or an export (tail sampling dropped their trace)
    released: list[RecordAck] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.outputs or self.span_records or self.released)

    def encoded(self) -> tuple[list[EncodedDocument], list[RecordAck]]:
        """Its documents encoded, and the acks they complete (trace summaries complete none). The
        outputs leave the delivery, so their dict trees go now rather than when Elasticsearch
        acknowledges: four bulks in flight held ~2 kB per document as dicts, ~0.5 kB as JSON
        (a log kept for repair keeps its own)."""
        outputs, self.outputs = self.outputs, []
        return encode_documents(outputs), [output.ack for output in outputs if output.ack is not None]


class Deliveries:
    def __init__(
        self,
        elasticsearch: DocumentSink,
        jaeger: SpanSink | None,
        metrics: CollectorMetrics,
        *,
        max_concurrent: int,
        delivered: Callable[[], None],
    ) -> None:
        self.elasticsearch = elasticsearch
        self.jaeger = jaeger
        self.metrics = metrics
        self._delivered = delivered  # after each delivery, whatever it was
        self._slots = asyncio.Semaphore(max_concurrent)
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def start(self, delivery: Delivery) -> None:
        """Start one delivery; wait while `max_concurrent` are in flight (backpressure on polling)."""
        await self._slots.acquire()
        task = asyncio.create_task(self.deliver(delivery))
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    async def settle(self) -> None:
        """Wait for every delivery in flight (their acknowledgements move the watermarks)."""
        if self._in_flight:
            await asyncio.gather(*self._in_flight)

    async def abandon(self) -> None:
        """Cancel every delivery in flight: unacknowledged, their records stay uncommitted."""
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery failed", exc_info=task.exception())

    async def deliver(self, delivery: Delivery) -> None:
        """Index and export now, then acknowledge every part the delivery carried."""
        documents, acks = delivery.encoded()
        span_records = delivery.span_records
        # Raised here, not in start(): a flush on stop or revoke delivers without a slot.
        self.metrics.inflight_documents.inc(len(documents))
        if documents or span_records:
            jaeger = (
                self.jaeger.export([request for request, _ in span_records])
                if self.jaeger is not None
                else asyncio.sleep(0)
            )
            rejections, _ = await asyncio.gather(self.elasticsearch.index(documents), jaeger)
            await self.elasticsearch.deadletter(rejections)  # kept, counted: the batch is not blocked
            for alias, count in Counter(document.alias for document in documents).items():
                self.metrics.documents_out.labels(alias).inc(count)
        for ack in acks:
            ack.done()
        for _, ack in span_records:
            ack.done()
        for ack in delivery.released:
            ack.done()
        self.metrics.inflight_documents.dec(len(documents))
        self._delivered()
