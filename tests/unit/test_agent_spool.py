"""The disk spool: FIFO order, durability across reopen, size accounting, corrupt files set aside."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.agent.batch import Batch
from tether.agent.spool import MAGIC, Spool, SpoolCorruptError, decode_batch, encode_batch
from tether.schemas.records import Signal


def _batch(n: int, signal: Signal = "logs") -> Batch:
    records = {n % 8: f"record-{n}".encode() * 10, (n + 1) % 8: b"x" * n}
    return Batch(signal, records, items=n + 1, partitions=8)


def test_encode_decode_round_trip() -> None:
    batch = _batch(5, "spans")
    assert decode_batch(encode_batch(batch)) == batch


@pytest.mark.parametrize("data", [b"", b"junk", MAGIC, encode_batch(_batch(3))[:-5]])
def test_decode_rejects_damaged_data(data: bytes) -> None:
    with pytest.raises(SpoolCorruptError):
        decode_batch(data)


def test_fifo_and_persistence_across_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**6, fsync=True)
    sequences = [spool.append(_batch(n)) for n in range(5)]
    assert sequences == sorted(sequences) and len(spool) == 5
    spool.remove(sequences[0])
    reopened = Spool(tmp_path, max_bytes=10**6, fsync=False)
    assert len(reopened) == 4
    head = reopened.head()
    assert head is not None and head[1] == _batch(1)
    assert reopened.append(_batch(9)) > sequences[-1]  # numbering continues after the tail
    drained = []
    while (item := reopened.head()) is not None:
        drained.append(item[1])
        reopened.remove(item[0])
    assert drained == [_batch(n) for n in (1, 2, 3, 4, 9)]
    assert reopened.bytes == 0 and len(reopened) == 0


def test_remove_forgets_that_batch_only(tmp_path: Path) -> None:
    """Removing a batch already gone (dropped while it was being sent) leaves the others alone."""
    spool = Spool(tmp_path, max_bytes=10**6, fsync=False)
    first, second = spool.append(_batch(0)), spool.append(_batch(1))
    spool.remove(first)
    spool.remove(first)
    head = spool.head()
    assert head is not None and head[0] == second and len(spool) == 1
    assert spool.bytes == (tmp_path / f"{second:020d}.batch").stat().st_size


def test_bytes_and_fits(tmp_path: Path) -> None:
    first = encode_batch(_batch(1))
    spool = Spool(tmp_path, max_bytes=len(first) * 2, fsync=False)
    assert spool.fits(10**9)  # an empty spool takes any one batch, however large
    spool.append(_batch(1))
    assert spool.bytes == len(first)
    assert spool.fits(len(first)) and not spool.fits(len(first) + 1)


def test_interrupted_write_and_corrupt_batch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, max_bytes=10**6, fsync=False)
    spool.append(_batch(1))
    spool.append(_batch(2))
    (tmp_path / "00000000000000000099.batch.tmp").write_bytes(b"half")
    first = sorted(tmp_path.glob("*.batch"))[0]
    first.write_bytes(b"garbage")
    reopened = Spool(tmp_path, max_bytes=10**6, fsync=False)
    assert not list(tmp_path.glob("*.tmp"))  # never acknowledged: removed
    head = reopened.head()
    assert head is not None and head[1] == _batch(2)  # the corrupt one is skipped...
    assert first.with_suffix(".corrupt").exists()  # ...and kept aside for inspection
    assert len(reopened) == 1
    # Its data is not sent: never silently (a lost batch once left no trace in the agent's log).
    errors = [r for r in caplog.records if r.levelname == "ERROR" and r.name == "tether.agent.spool"]
    assert [getattr(r, "path", None) for r in errors] == [str(first)]
