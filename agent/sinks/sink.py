"""What delivery needs of the broker it writes to: send a batch's records and wait for the ack.

Delivery decides what a failure means (spill to the spool, retry, back off) from the two errors
below, so it never sees the broker client's own exceptions. A sink raises `SinkUnavailable` when
a send was not acknowledged and trying again later may work (broker down, request timed out),
and `SinkReset` when it has just replaced a broken connection or producer: the next send has a
fresh one, so waiting before it would only add latency. Anything else is a bug and propagates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from tether.schemas.records import Signal


class SinkError(Exception):
    """A send that was not acknowledged; the records may or may not have reached the broker.

    `__cause__` is the broker client's own error, kept for logs.
    """


class SinkUnavailable(SinkError):
    """The broker did not acknowledge; try again later (back off)."""


class SinkReset(SinkError):
    """The sink replaced its broken producer while this send failed; try again now."""


class Sink(Protocol):
    @property
    def partitions(self) -> int:
        """The partition count of the topics; 0 while the sink has not reached the broker."""
        ...

    def topic(self, signal: Signal) -> str:
        """Where `signal`'s records go; the label of the sent-records metrics."""
        ...

    async def send(self, signal: Signal, records: Mapping[int, bytes]) -> None:
        """Send one record per partition; return once the broker acknowledged every one.

        Raises SinkUnavailable or SinkReset when it did not.
        """
        ...
