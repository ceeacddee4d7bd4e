"""The OTLP receivers in-process for tests: both servers on 127.0.0.1:0 in front of the real
OtlpIngest and Delivery, over a fake sink (no broker), and requests to send them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.unit.agent_fakes import FakeSink, wait_until
from tether.agent.batch import Batch
from tether.agent.config import OtlpReceiverConfig, SpoolConfig
from tether.agent.delivery import Delivery
from tether.agent.metrics import AgentMetrics
from tether.agent.sources.otlp import OtlpIngest
from tether.agent.sources.otlp_grpc import OtlpGrpcServer, start_grpc_receiver
from tether.agent.sources.otlp_http import OtlpHttpServer, start_http_receiver

PARTITIONS = 4
MAX_REQUEST_BYTES = 64 * 1024
SPILL_AFTER_SECONDS = 0.2
SPOOL_BYTES = 1024 * 1024  # the smallest spool there is: quick to fill


@dataclass
class Receivers:
    sink: FakeSink
    metrics: AgentMetrics
    delivery: Delivery
    http: OtlpHttpServer
    grpc: OtlpGrpcServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc.port}"

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(f"tether_agent_{name}_total", labels) or 0.0

    async def fill_the_spool(self) -> None:
        """The sink down and the spool full: the next request waits for room, then is refused."""
        self.sink.up = False
        receipt = await self.delivery.submit(Batch("logs", {0: bytes(SPOOL_BYTES)}, 1, partitions=PARTITIONS))
        await receipt.durable
        await wait_until(lambda: not self.delivery.spool.fits(1))


@asynccontextmanager
async def receivers(tmp_path: Path, **otlp: Any) -> AsyncIterator[Receivers]:
    sink = FakeSink()
    metrics = AgentMetrics()
    spool = SpoolConfig(spill_after_seconds=SPILL_AFTER_SECONDS, fsync="never", max_bytes=SPOOL_BYTES)
    delivery = Delivery(sink, spool, tmp_path / "spool", metrics)
    await delivery.start()
    # The endpoints are the servers' own arguments below: port 0, which a configuration refuses.
    config = OtlpReceiverConfig(
        grpc_endpoint=None,
        http_endpoint=None,
        max_request_bytes=MAX_REQUEST_BYTES,
        accept_timeout_seconds=0.2,
        **otlp,
    )
    ingest = OtlpIngest(config, delivery, PARTITIONS, metrics)
    http = await start_http_receiver("127.0.0.1:0", ingest)
    grpc = await start_grpc_receiver("127.0.0.1:0", ingest)
    try:
        yield Receivers(sink, metrics, delivery, http, grpc)
    finally:
        await grpc.stop(None)
        await http.stop()
        await delivery.stop(1)


def partition_of(trace_id: bytes) -> int:
    return int.from_bytes(trace_id[8:16], "big") % PARTITIONS


def span(name: str, trace_id: bytes | None = None) -> Span:
    return Span(
        trace_id=os.urandom(16) if trace_id is None else trace_id,
        span_id=os.urandom(8),
        name=name,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_001_000_000,
    )


def traces_request(*spans: Span) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


def logs_request(*bodies: str) -> ExportLogsServiceRequest:
    records = [LogRecord(body=AnyValue(string_value=body)) for body in bodies]
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])])


def delivered_spans(sink: FakeSink) -> dict[str, tuple[int, Span]]:
    """Span name -> (partition, span) of every span the sink acknowledged."""
    found = {}
    for sent in sink.sent:
        if sent.signal == "spans":
            request = ExportTraceServiceRequest.FromString(sent.value)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    found.update({s.name: (sent.partition, s) for s in scope_spans.spans})
    return found


def delivered_log_bodies(sink: FakeSink) -> list[str]:
    return [
        record.body.string_value
        for request in sink.logs()
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    ]
