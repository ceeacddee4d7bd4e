"""Event time: each partition number's clock, read from its records, so a backlog is correlated
exactly as the same records were live.

A trace is held for `correlation.wait_seconds` of event time after its first item. The Kafka record
timestamp is the event time (when the agent sent it), and a partition's clock is the older of its two
topics' positions in that time: the latest record timestamp consumed from each, or the wall clock
once a topic is caught up (nothing more to read, as live). A record stamped more than `slack` past
the other topic's position is not consumed (`admits`): it waits, its topic-partition paused, until
the other topic catches up. So neither reads far past the clock, not even within one poll (which
can hold many seconds of one topic, or only one topic at start-up): logs cannot be emitted before
the spans written beside them were read, however far behind the consumer is.

A topic that makes no progress for `stall_seconds` although it is not caught up (a partition
without a leader) stops holding the clock back: correlation degrades, consuming never stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.schemas.records import Signal

STALL_SECONDS = 30.0


@dataclass(slots=True)
class TopicProgress:
    """How far one topic-partition has been read, in event time."""

    watermark_ms: int = 0  # the latest record timestamp consumed; 0 before the first
    caught_up: bool = False  # nothing more to read (the consumer's position is the high watermark)
    progressed: float = 0.0  # monotonic time of the last record consumed, or of catching up

    def clock_ms(self, now: float, stall_seconds: float) -> int | None:
        """This topic's position in event time; None while it holds nothing back."""
        if self.caught_up or now - self.progressed > stall_seconds:
            return None
        return self.watermark_ms


@dataclass(slots=True)
class PartitionClock:
    """The event time of one partition number, from both of its topics."""

    slack_ms: int
    stall_seconds: float = STALL_SECONDS
    topics: dict[Signal, TopicProgress] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topics = {"logs": TopicProgress(), "spans": TopicProgress()}

    def started(self, now: float) -> None:
        """Start the stall timers (a new assignment): nothing is read yet."""
        for progress in self.topics.values():
            progress.progressed = now

    def consumed(self, signal: Signal, timestamp_ms: int, now: float) -> None:
        progress = self.topics[signal]
        if timestamp_ms > progress.watermark_ms:
            progress.watermark_ms = timestamp_ms
        progress.progressed = now

    def caught_up(self, signal: Signal, caught_up: bool, now: float) -> None:
        progress = self.topics[signal]
        if caught_up and not progress.caught_up:
            progress.progressed = now
        progress.caught_up = caught_up

    def now_ms(self, wall_ms: int, now: float) -> int:
        """The partition's event time: the older topic's position, the wall clock if both caught up.
        `wall_ms` is the wall clock in milliseconds, `now` monotonic seconds (for stalls)."""
        clocks = [p.clock_ms(now, self.stall_seconds) for p in self.topics.values()]
        return min([wall_ms, *(c for c in clocks if c is not None)])

    def admits(self, signal: Signal, event_ms: int, now: float) -> bool:
        """Whether a record of `signal` stamped `event_ms` may be consumed now: not past the other
        topic's position by more than the slack (a topic not read at all yet is at 0: it is waited
        for, until it is caught up or stalls)."""
        other = self.topics["spans" if signal == "logs" else "logs"]
        clock = other.clock_ms(now, self.stall_seconds)
        return clock is None or event_ms <= clock + self.slack_ms

    def ahead(self, now: float) -> Signal | None:
        """The topic to pause: the one past the other's position by more than the slack."""
        logs, spans = self.topics["logs"], self.topics["spans"]
        logs_clock = logs.clock_ms(now, self.stall_seconds)
        spans_clock = spans.clock_ms(now, self.stall_seconds)
        if spans_clock is not None and logs.watermark_ms > spans_clock + self.slack_ms:
            return "logs"
        if logs_clock is not None and spans.watermark_ms > logs_clock + self.slack_ms:
            return "spans"
        return None
