"""schemas.records: the partitioning contract shared by the agent and the collector."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tether.schemas.records import is_valid_trace_id, partition_for_trace, record_id

W3C_TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


def trace_with_low(low: int, high: bytes = bytes(8)) -> bytes:
    return high + low.to_bytes(8, "big")


def test_partition_is_low_64_bits_mod_n() -> None:
    assert partition_for_trace(trace_with_low(5), 3) == 2
    assert partition_for_trace(trace_with_low(12), 12) == 0
    assert partition_for_trace(trace_with_low(13), 12) == 1
    # The W3C example id: the low half is a3ce929d0e0e4736.
    assert partition_for_trace(W3C_TRACE, 12) == 0xA3CE929D0E0E4736 % 12
    assert partition_for_trace(W3C_TRACE, 7) == 0xA3CE929D0E0E4736 % 7


def test_partition_reads_the_low_half_big_endian() -> None:
    # Byte 8 is the most significant byte of the low half: value 2**56, not 1.
    trace_id = bytes(8) + b"\x01" + bytes(7)
    assert partition_for_trace(trace_id, 10) == (1 << 56) % 10 == 6
    # Byte 15 is the least significant one.
    assert partition_for_trace(bytes(15) + b"\x03", 10) == 3


def test_partition_ignores_the_high_half() -> None:
    for high in (bytes(8), b"\xff" * 8, bytes(range(8))):
        assert partition_for_trace(trace_with_low(1234567), 10) == partition_for_trace(
            trace_with_low(1234567, high), 10
        )


def test_single_partition_is_always_zero() -> None:
    rng = random.Random(1)
    assert {partition_for_trace(rng.randbytes(16), 1) for _ in range(100)} == {0}


@pytest.mark.parametrize("partitions", [1, 2, 3, 12, 64])
def test_partition_is_in_range_and_deterministic(partitions: int) -> None:
    rng = random.Random(partitions)
    for _ in range(500):
        trace_id = rng.randbytes(16)
        first = partition_for_trace(trace_id, partitions)
        assert 0 <= first < partitions
        assert partition_for_trace(bytes(trace_id), partitions) == first


def test_random_trace_ids_spread_evenly() -> None:
    rng = random.Random(20240102)
    partitions, samples = 12, 24_000
    counts = Counter(partition_for_trace(rng.randbytes(16), partitions) for _ in range(samples))
    assert set(counts) == set(range(partitions))
    expected = samples / partitions  # 2000; the binomial standard deviation is about 43
    for partition, count in counts.items():
        assert abs(count - expected) < 0.1 * expected, (partition, count)


def test_is_valid_trace_id() -> None:
    assert is_valid_trace_id(W3C_TRACE)
    assert is_valid_trace_id(bytes(15) + b"\x01")
    assert not is_valid_trace_id(bytes(16))  # the all-zero id is invalid in W3C and OTLP
    assert not is_valid_trace_id(b"")
    assert not is_valid_trace_id(W3C_TRACE[:8])
    assert not is_valid_trace_id(W3C_TRACE[:15])
    assert not is_valid_trace_id(W3C_TRACE + b"\x00")


def test_record_id_is_deterministic_and_distinguishes_its_parts() -> None:
    assert record_id("host-1", "abc123", 42) == record_id("host-1", "abc123", 42)
    ids = {
        record_id("host-1", "abc123", 42),
        record_id("host-2", "abc123", 42),
        record_id("host-1", "abc124", 42),
        record_id("host-1", "abc123", 43),
    }
    assert len(ids) == 4
    assert record_id("host-1", "abc123", 42) == "host-1:abc123:42"
