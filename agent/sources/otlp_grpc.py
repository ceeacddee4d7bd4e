"""The OTLP/gRPC receiver: TraceService and LogsService Export, answered after Kafka acked.

MetricsService is not registered, so gRPC answers its calls with UNIMPLEMENTED.
"""

from __future__ import annotations

import logging

import grpc
from aiokafka.errors import KafkaError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from agent.config import OtlpReceiverConfig
from agent.encode import LOGS, TRACES, UntracedSpreader, split_request
from agent.sinks.kafka import KafkaSink

log = logging.getLogger("tether.agent.otlp")


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: KafkaSink) -> None:
        self.sink = sink

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        split = split_request(request, TRACES, self.sink.partitions, untraced_partition=None)
        try:
            await self.sink.send_spans(split.records)
        except KafkaError as error:
            log.warning("spans not accepted: Kafka unavailable", extra={"error": str(error)})
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"Kafka unavailable, retry later: {error}")
        response = trace_service_pb2.ExportTraceServiceResponse()
        if split.rejected:
            response.partial_success.rejected_spans = split.rejected
            response.partial_success.error_message = (
                f"{split.rejected} span(s) rejected: trace_id must be 16 bytes and not all zero"
            )
        return response


class LogsReceiver(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink: KafkaSink) -> None:
        self.sink = sink
        self._spreader = UntracedSpreader()

    async def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.aio.ServicerContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        partitions = self.sink.partitions
        split = split_request(request, LOGS, partitions, self._spreader.next_partition(partitions))
        try:
            await self.sink.send_logs(split.records)
        except KafkaError as error:
            log.warning("logs not accepted: Kafka unavailable", extra={"error": str(error)})
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"Kafka unavailable, retry later: {error}")
        return logs_service_pb2.ExportLogsServiceResponse()


async def start_grpc_receiver(config: OtlpReceiverConfig, sink: KafkaSink) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.max_request_bytes),
        ]
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceReceiver(sink), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsReceiver(sink), server)
    if server.add_insecure_port(config.grpc_endpoint) == 0:
        raise OSError(f"otlp.grpc_endpoint: cannot listen on {config.grpc_endpoint} (port in use?)")
    await server.start()
    log.info("OTLP/gRPC receiver listening", extra={"endpoint": config.grpc_endpoint})
    return server
