"""collector.offsets: the commit watermark of one partition."""

from __future__ import annotations

import random

import pytest

from tether.collector.offsets import OffsetTracker


def test_none_before_any_record() -> None:
    tracker = OffsetTracker()
    assert tracker.watermark() is None
    assert tracker.pending == 0


def test_single_record_with_several_documents() -> None:
    tracker = OffsetTracker()
    tracker.add(10, 2)
    assert tracker.watermark() == 10
    assert tracker.pending == 1
    tracker.done(10)
    assert tracker.watermark() == 10  # one document still outstanding
    tracker.done(10)
    assert tracker.watermark() == 11
    assert tracker.pending == 0


def test_done_with_a_document_count() -> None:
    tracker = OffsetTracker()
    tracker.add(3, 5)
    tracker.done(3, 4)
    assert tracker.watermark() == 3
    tracker.done(3, 1)
    assert tracker.watermark() == 4


def test_watermark_is_the_lowest_outstanding_offset() -> None:
    tracker = OffsetTracker()
    for offset in (100, 101, 102):
        tracker.add(offset, 1)
    tracker.done(101)
    assert tracker.watermark() == 100
    tracker.done(102)
    assert tracker.watermark() == 100
    tracker.done(100)
    assert tracker.watermark() == 103  # all done: one past the highest seen


def test_records_without_documents_are_done_at_once() -> None:
    tracker = OffsetTracker()
    tracker.add(0, 0)
    assert tracker.watermark() == 1
    assert tracker.pending == 0
    tracker.add(1, 1)
    tracker.add(2, 0)
    assert tracker.watermark() == 1
    tracker.done(1)
    assert tracker.watermark() == 3


def test_first_offset_zero_is_not_none() -> None:
    tracker = OffsetTracker()
    tracker.add(0, 1)
    assert tracker.watermark() == 0


def test_done_for_unknown_offset_raises() -> None:
    tracker = OffsetTracker()
    tracker.add(5, 1)
    with pytest.raises(KeyError):
        tracker.done(6)


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_reference_model(seed: int) -> None:
    rng = random.Random(seed)
    tracker = OffsetTracker()
    outstanding: dict[int, int] = {}
    offset = rng.randrange(0, 1000)
    highest = None
    last_watermark = None
    for _ in range(400):
        if outstanding and rng.random() < 0.5:
            chosen = rng.choice(sorted(outstanding))
            tracker.done(chosen)
            outstanding[chosen] -= 1
            if not outstanding[chosen]:
                del outstanding[chosen]
        else:
            documents = rng.choice([0, 1, 1, 2, 3])
            tracker.add(offset, documents)
            if documents:
                outstanding[offset] = documents
            highest = offset
            offset += rng.choice([1, 1, 1, 2])  # compacted topics have gaps
        expected = min(outstanding) if outstanding else (None if highest is None else highest + 1)
        watermark = tracker.watermark()
        assert watermark == expected
        assert tracker.pending == len(outstanding)
        if last_watermark is not None:
            assert watermark is not None and watermark >= last_watermark  # never moves back
        last_watermark = watermark


def test_a_record_ack_completes_its_offset_with_its_last_part() -> None:
    tracker = OffsetTracker()
    first, second = tracker.track(7, 2), tracker.track(8, 1)
    second.done()
    assert tracker.watermark() == 7  # the earlier record still has a part out
    first.done()
    assert (tracker.watermark(), first.pending) == (7, 1)
    first.done()
    assert (tracker.watermark(), tracker.pending) == (9, 0)


def test_a_record_ack_without_parts_is_done_at_once() -> None:
    tracker = OffsetTracker()
    tracker.track(3, 1)
    tracker.track(4, 0)
    assert (tracker.watermark(), tracker.pending) == (3, 1)


def test_a_record_ack_acknowledged_once_too_often_raises() -> None:
    tracker = OffsetTracker()
    ack = tracker.track(0, 1)
    ack.done()
    with pytest.raises(RuntimeError, match="offset 0"):
        ack.done()


def test_a_record_ack_finishes_on_the_tracker_that_made_it() -> None:
    revoked, reassigned = OffsetTracker(), OffsetTracker()
    late = revoked.track(5, 1)
    reassigned.track(5, 1)  # the same record, read again after a rebalance
    late.done()
    assert revoked.watermark() == 6
    assert reassigned.watermark() == 5
