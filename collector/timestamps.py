"""Bounding document timestamps: the daily index a document goes to is the day of its @timestamp,
so a line stamped far in the past or future (a broken clock, a wrong epoch unit) would create an
index for each bogus day, and enough of them exhaust the cluster's shard limit and block indexing.

A timestamp outside the window around the Kafka record's own timestamp is replaced by that time
(when the record reached Kafka: the arrival), the original kept in `tether.original_timestamp` and
the document flagged `tether.timestamp_out_of_range`. The record's timestamp, not the collector's
clock, is the reference, so a replay of the record decides exactly as the first reading did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tether.collector.documents import LogDoc, SpanDoc, iso_timestamp

_HEAD_PREFIX = b'{"@timestamp":"'


@dataclass(frozen=True, slots=True)
class TimestampWindow:
    max_age_ns: int
    max_ahead_ns: int

    @classmethod
    def of(cls, max_age_days: float, max_ahead_hours: float) -> TimestampWindow:
        return cls(int(max_age_days * 86_400e9), int(max_ahead_hours * 3_600e9))

    def bound(self, docs: Sequence[LogDoc | SpanDoc], arrival_ns: int) -> int:
        """Move the documents stamped outside the window to `arrival_ns`; how many moved."""
        if arrival_ns <= 0:
            return 0  # a record without a timestamp: nothing to measure against
        low, high = arrival_ns - self.max_age_ns, arrival_ns + self.max_ahead_ns
        moved = 0
        for doc in docs:
            if low <= doc.timestamp_ns <= high:
                continue
            _move(doc, arrival_ns)
            moved += 1
        return moved


def _move(doc: LogDoc | SpanDoc, arrival_ns: int) -> None:
    flags = doc.source.setdefault("tether", {})
    flags["original_timestamp"] = iso_timestamp(doc.timestamp_ns)
    flags["timestamp_out_of_range"] = True
    doc.timestamp_ns = arrival_ns
    iso = iso_timestamp(arrival_ns).encode()
    if doc.head is not None:
        # the native path's head starts with the timestamp: {"@timestamp":"...",
        end = doc.head.index(b'"', len(_HEAD_PREFIX))
        doc.head = _HEAD_PREFIX + iso + doc.head[end:]
    else:
        doc.source["@timestamp"] = iso.decode()
