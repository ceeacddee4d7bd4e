"""What OTLP/gRPC and OTLP/HTTP share: split a request by partition, hand it to delivery, and
wait until it is durable (acknowledged by Kafka or on disk in the spool)."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import Literal

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agent.config import OtlpReceiverConfig
from agent.delivery import BackpressureError, Delivery
from agent.encode import LOGS, TRACES, UntracedSpreader, split_request
from agent.metrics import AgentMetrics
from agent.spool import Batch

Signal = Literal["traces", "logs"]
Protocol = Literal["grpc", "http"]

RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Accepted:
    accepted: int
    rejected: int
    message: str


class OtlpIngest:
    def __init__(
        self, config: OtlpReceiverConfig, delivery: Delivery, partitions: int, metrics: AgentMetrics
    ) -> None:
        self.config = config
        self.delivery = delivery
        self.partitions = partitions
        self.metrics = metrics
        self._spreader = UntracedSpreader()

    def authorized(self, authorization: str | None) -> bool:
        """True when no token is configured or `authorization` is `Bearer <token>`."""
        if self.config.bearer_token is None:
            return True
        expected = f"Bearer {self.config.bearer_token}"
        return authorization is not None and hmac.compare_digest(authorization.encode(), expected.encode())

    async def traces(self, request: ExportTraceServiceRequest, protocol: Protocol) -> Accepted:
        split = split_request(request, TRACES, self.partitions, untraced_partition=None)
        total = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        message = (
            f"{split.rejected} span(s) rejected: trace_id must be 16 bytes and not all zero"
            if split.rejected
            else ""
        )
        return await self._deliver(
            Batch("spans", split.records, total - split.rejected), "traces", protocol, split.rejected, message
        )

    async def logs(self, request: ExportLogsServiceRequest, protocol: Protocol) -> Accepted:
        split = split_request(request, LOGS, self.partitions, self._spreader.next_partition(self.partitions))
        total = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
        return await self._deliver(Batch("logs", split.records, total), "logs", protocol, 0, "")

    async def _deliver(
        self, batch: Batch, signal: Signal, protocol: Protocol, rejected: int, message: str
    ) -> Accepted:
        if rejected:
            self.metrics.otlp_rejected.labels(signal, protocol, "invalid_trace_id").inc(rejected)
        if batch.records:
            try:
                receipt = await self.delivery.submit(batch, accept_timeout=self.config.accept_timeout_seconds)
                limit = self.delivery.config.spill_after_seconds + self.config.accept_timeout_seconds
                await asyncio.wait_for(asyncio.shield(receipt.durable), limit)
            except (BackpressureError, TimeoutError) as error:
                self.metrics.otlp_rejected.labels(signal, protocol, "backpressure").inc(batch.items)
                self.metrics.otlp_requests.labels(signal, protocol, "backpressure").inc()
                raise BackpressureError(
                    f"agent is at capacity (Kafka slow or down and the spool full); retry in "
                    f"{RETRY_AFTER_SECONDS}s"
                ) from error
        self.metrics.otlp_received.labels(signal, protocol).inc(batch.items)
        self.metrics.otlp_requests.labels(signal, protocol, "partial" if rejected else "ok").inc()
        return Accepted(batch.items, rejected, message)
