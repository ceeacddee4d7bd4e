"""What OTLP/gRPC and OTLP/HTTP share: split a request (protobuf bytes) by partition with the
native splitter, hand it to delivery, and wait until it is durable (acknowledged by Kafka or on
disk in the spool). Requests are never decoded into Python objects on this path."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import Literal

from tether.agent.batch import Batch
from tether.agent.config import OtlpReceiverConfig
from tether.agent.delivery import BackpressureError, Delivery
from tether.agent.encode import UntracedSpreader
from tether.agent.metrics import AgentMetrics
from tether.agent.split import split_logs_bytes, split_traces_bytes
from tether.schemas.records import OTLP_SIGNAL_NAMES

Transport = Literal["grpc", "http"]

RETRY_AFTER_SECONDS = 5


class InvalidRequestError(ValueError):
    """The body is not the OTLP request it should be: a client error, never retried."""


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
        self.partitions = partitions  # set again when Kafka's count is learnt after start
        self.metrics = metrics
        self._spreader = UntracedSpreader()

    @property
    def max_wait_seconds(self) -> float:
        """How long a request may wait for its data to become durable: the time it may wait for
        room in delivery, plus the time delivery takes to make an accepted batch durable."""
        return self.config.accept_timeout_seconds + self.delivery.durable_within_seconds

    def authorized(self, authorization: str | None) -> bool:
        """True when no token is configured or `authorization` is `Bearer <token>`."""
        if self.config.bearer_token is None:
            return True
        expected = f"Bearer {self.config.bearer_token}"
        return authorization is not None and hmac.compare_digest(authorization.encode(), expected.encode())

    async def traces(self, body: bytes, transport: Transport) -> Accepted:
        """An ExportTraceServiceRequest as protobuf bytes; raises InvalidRequestError if it is not one."""
        try:
            split = split_traces_bytes(body, self.partitions)
        except ValueError as error:
            raise InvalidRequestError(
                f"the body is not a valid ExportTraceServiceRequest (protobuf): {error}"
            ) from error
        invalid_trace_id = split.rejected - split.rejected_span_id - split.rejected_related_id
        rejected = {
            "invalid_trace_id": invalid_trace_id,
            "invalid_span_id": split.rejected_span_id,
            "invalid_parent_or_link_id": split.rejected_related_id,
        }
        return await self._deliver(
            Batch("spans", split.records, split.total - split.rejected, partitions=self.partitions),
            transport,
            {reason: count for reason, count in rejected.items() if count},
            _rejected_spans_message(invalid_trace_id, split.rejected_span_id, split.rejected_related_id),
        )

    async def logs(self, body: bytes, transport: Transport) -> Accepted:
        """An ExportLogsServiceRequest as protobuf bytes; raises InvalidRequestError if it is not one."""
        try:
            split = split_logs_bytes(body, self.partitions, self._spreader.next_partition(self.partitions))
        except ValueError as error:
            raise InvalidRequestError(
                f"the body is not a valid ExportLogsServiceRequest (protobuf): {error}"
            ) from error
        warning = _cleared_ids_message(split.cleared_trace_id, split.cleared_span_id)
        batch = Batch("logs", split.records, split.total, partitions=self.partitions)
        accepted = await self._deliver(batch, transport, {}, warning)
        # Kept without their malformed ids (a record attribute flags them): counted once accepted,
        # not rejected.
        for field, count in (("trace_id", split.cleared_trace_id), ("span_id", split.cleared_span_id)):
            if count:
                self.metrics.otlp_invalid_ids.labels("logs", transport, field).inc(count)
        return accepted

    async def _deliver(
        self, batch: Batch, transport: Transport, rejections: dict[str, int], message: str
    ) -> Accepted:
        """`rejections`: items rejected by reason (the metric's label), none counted zero."""
        signal = OTLP_SIGNAL_NAMES[batch.signal]
        rejected = sum(rejections.values())
        for reason, count in rejections.items():
            self.metrics.otlp_rejected.labels(signal, transport, reason).inc(count)
        if batch.records:
            try:
                receipt = await self.delivery.submit(batch, accept_timeout=self.config.accept_timeout_seconds)
                await asyncio.wait_for(asyncio.shield(receipt.durable), self.max_wait_seconds)
            except (BackpressureError, TimeoutError) as error:
                self.metrics.otlp_rejected.labels(signal, transport, "backpressure").inc(batch.items)
                self.metrics.otlp_requests.labels(signal, transport, "backpressure").inc()
                raise BackpressureError(
                    f"agent is at capacity (Kafka slow or down and the spool full); retry in "
                    f"{RETRY_AFTER_SECONDS}s"
                ) from error
        self.metrics.otlp_received.labels(signal, transport).inc(batch.items)
        self.metrics.otlp_requests.labels(signal, transport, "partial" if rejected else "ok").inc()
        return Accepted(batch.items, rejected, message)


def _cleared_ids_message(cleared_trace_id: int, cleared_span_id: int) -> str:
    """The partial success's error_message when no log record was rejected but some lost a
    malformed id: OTLP lets a server warn that way (rejected_log_records 0)."""
    parts = []
    if cleared_trace_id:
        parts.append(
            f"{cleared_trace_id} log record(s) kept without their trace_id and span_id: "
            "trace_id must be empty or 16 bytes and not all zero"
        )
    if cleared_span_id:
        parts.append(
            f"{cleared_span_id} log record(s) kept without their span_id: span_id must be empty or 8 bytes"
        )
    return "; ".join(parts)


def _rejected_spans_message(invalid_trace_id: int, invalid_span_id: int, invalid_related_id: int = 0) -> str:
    """The partial success's error_message: what was wrong, with how many spans when several were."""
    reasons = []
    if invalid_trace_id:
        reasons.append(("trace_id must be 16 bytes and not all zero", invalid_trace_id))
    if invalid_span_id:
        reasons.append(("span_id must be 8 bytes and not all zero", invalid_span_id))
    if invalid_related_id:
        reasons.append(
            (
                "parent_span_id and a link's span_id must be empty or 8 bytes, a link's trace_id "
                "empty or 16 bytes",
                invalid_related_id,
            )
        )
    total = invalid_trace_id + invalid_span_id + invalid_related_id
    if not reasons:
        return ""
    if len(reasons) == 1:
        return f"{total} span(s) rejected: {reasons[0][0]}"
    return f"{total} span(s) rejected: " + "; ".join(f"{rule} ({count} span(s))" for rule, count in reasons)
