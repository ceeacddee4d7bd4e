"""The Jaeger sink: spans to Jaeger v2 over OTLP/gRPC, retried until accepted."""

from __future__ import annotations

import asyncio
import logging
import random

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from tether.collector.config import JaegerSinkConfig
from tether.collector.metrics import CollectorMetrics
from tether.grpc_errors import explain

log = logging.getLogger("tether.collector.jaeger")

RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DATA_LOSS,
}


class JaegerSink:
    def __init__(self, config: JaegerSinkConfig, metrics: CollectorMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self._channel = config.channel(config.endpoint)
        self._metadata = config.metadata()
        self.healthy = True  # false while the export is refused for a reason the config must fix
        self._stub = TraceServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def export(self, requests: list[ExportTraceServiceRequest]) -> None:
        """Export spans; a Jaeger outage blocks here (holding Kafka commits back) rather than losing them."""
        if not requests:
            return
        merged = ExportTraceServiceRequest()
        for request in requests:
            merged.resource_spans.extend(request.resource_spans)
        attempt = 0
        while True:
            try:
                response = await self._stub.Export(
                    merged, timeout=self.config.timeout_seconds, metadata=self._metadata
                )
                self.healthy = True
                if response.partial_success.rejected_spans:
                    log.error(
                        "Jaeger rejected spans",
                        extra={
                            "rejected": response.partial_success.rejected_spans,
                            "reason": response.partial_success.error_message,
                        },
                    )
                return
            except grpc.aio.AioRpcError as error:
                # TLS and credential refusals hold the spans back until the setting is fixed.
                problem = explain(error.code(), error.details() or "", "jaeger")
                if problem is None and error.code() not in RETRYABLE:
                    log.error(
                        "Jaeger refused spans for good",
                        extra={"code": error.code().name, "error": error.details()},
                    )
                    return
                attempt += 1
                self.healthy = problem is None
                self.metrics.jaeger_errors.labels(error.code().name).inc()
                delay = random.uniform(0, min(10.0, 0.2 * 2 ** min(attempt, 16)))
                log.log(
                    logging.WARNING if problem is None else logging.ERROR,
                    "Jaeger unavailable; retrying"
                    if problem is None
                    else "Jaeger refused the export; retrying",
                    extra={
                        "attempt": attempt,
                        "retry_in_seconds": round(delay, 2),
                        "code": error.code().name,
                        **({} if problem is None else {"error": problem}),
                    },
                )
                await asyncio.sleep(delay)
