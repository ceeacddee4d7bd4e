"""Stand-ins for the agent's in-process tests (no broker): a scripted sink, and waiting for a condition.

`FakeSink` is like httpx's MockTransport: it implements the `Sink` protocol and does what the test says. It
acknowledges by default; `hang()` makes sends wait unanswered until `resume()` (a broker that
stopped responding), `up = False` fails every send with SinkUnavailable after a short wait (a
broker that is down), and `resets` fails that many next sends with SinkReset (the producer had
to be replaced). `partitions` is the topics' count it reports, as the Kafka sink does once
started; 0 is a sink that has not reached its broker yet: like KafkaSink, it refuses a send it
was called with before it knew the count, whenever that send would end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tether.agent.sinks.sink import SinkReset, SinkUnavailable
from tether.schemas.records import Signal


@dataclass(frozen=True, slots=True)
class Sent:
    """One record the fake broker acknowledged."""

    signal: Signal
    partition: int
    value: bytes


class FakeSink:
    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self.up = True
        self.resets = 0
        self.attempts = 0
        self.sent: list[Sent] = []
        self._answering = asyncio.Event()
        self._answering.set()

    def topic(self, signal: Signal) -> str:
        return f"fake.{signal}"

    async def send(self, signal: Signal, records: Mapping[int, bytes]) -> None:
        self.attempts += 1
        connected = self.partitions > 0  # what the records were split for was decided now
        await self._answering.wait()
        await asyncio.sleep(0.005)  # an acknowledgement is never immediate
        if self.resets:
            self.resets -= 1
            raise SinkReset("producer replaced") from ConnectionResetError("producer fenced")
        if not self.up or not connected:
            raise SinkUnavailable("broker down") from ConnectionRefusedError("broker down")
        self.sent.extend(Sent(signal, partition, value) for partition, value in records.items())

    def hang(self) -> None:
        """Sends from now on wait, unanswered, until `resume()`."""
        self._answering.clear()

    def resume(self) -> None:
        self._answering.set()

    def logs(self) -> list[ExportLogsServiceRequest]:
        return [ExportLogsServiceRequest.FromString(s.value) for s in self.sent if s.signal == "logs"]

    def spans(self) -> list[ExportTraceServiceRequest]:
        return [ExportTraceServiceRequest.FromString(s.value) for s in self.sent if s.signal == "spans"]


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Return once `condition()` holds; fail the test if it does not within `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {within}s"
        await asyncio.sleep(0.005)
