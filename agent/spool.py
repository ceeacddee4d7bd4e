"""The disk spool: batches Kafka could not take yet, kept in order on disk until it can.

One file per batch, written to a temporary name, fsynced (per policy) and renamed, so a crash
leaves either a whole batch or none. Names are zero-padded sequence numbers: sorted is FIFO.

    file = b"TSPL" | version u8 | signal u8 | items u32 | count u32 | [partitions u32] |
           (partition u32, size u32, bytes)*

Version 2 records the partition count the batch was split for (`partitions`), so that a batch
spooled while Kafka's count was not known, or was another, is split again before it is sent.
Version 1 files (older agents) have no such field: they read as partitions 0, not known, and
are always split again. An older agent sets version 2 files aside as corrupt: downgrade with an
empty spool.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

from tether.agent.batch import Batch
from tether.agent.durable import write_atomically
from tether.schemas.records import Signal

MAGIC = b"TSPL\x02"
_MAGIC_V1 = b"TSPL\x01"
_HEADER = struct.Struct(">BIII")  # signal, items (lines/spans), record count, partitions split for
_HEADER_V1 = struct.Struct(">BII")  # signal, items, record count
_RECORD = struct.Struct(">II")  # partition, size

_SIGNAL_CODES: dict[Signal, int] = {"logs": 0, "spans": 1}
_SIGNALS: dict[int, Signal] = {0: "logs", 1: "spans"}

log = logging.getLogger("tether.agent.spool")


class SpoolCorruptError(ValueError):
    pass


def encode_batch(batch: Batch) -> bytes:
    parts = [
        MAGIC,
        _HEADER.pack(_SIGNAL_CODES[batch.signal], batch.items, len(batch.records), batch.partitions),
    ]
    for partition, value in batch.records.items():
        parts.append(_RECORD.pack(partition, len(value)))
        parts.append(value)
    return b"".join(parts)


def decode_batch(data: bytes) -> Batch:
    try:
        if data.startswith(MAGIC):
            signal_code, items, count, partitions = _HEADER.unpack_from(data, len(MAGIC))
            position = len(MAGIC) + _HEADER.size
        elif data.startswith(_MAGIC_V1):
            signal_code, items, count = _HEADER_V1.unpack_from(data, len(_MAGIC_V1))
            partitions = 0  # not recorded: split again before sending
            position = len(_MAGIC_V1) + _HEADER_V1.size
        else:
            raise SpoolCorruptError("not a spool batch (bad magic)")
        records: dict[int, bytes] = {}
        for _ in range(count):
            partition, size = _RECORD.unpack_from(data, position)
            position += _RECORD.size
            records[partition] = data[position : position + size]
            if len(records[partition]) != size:
                raise SpoolCorruptError("truncated record")
            position += size
        return Batch(_SIGNALS[signal_code], records, items, partitions=partitions)
    except (struct.error, KeyError) as error:
        raise SpoolCorruptError(str(error)) from error


class Spool:
    def __init__(self, directory: Path, max_bytes: int, fsync: bool) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.batch.tmp"):
            leftover.unlink()  # a write a crash interrupted: its batch was never acknowledged
        self._files = sorted(directory.glob("*.batch"))
        self._sizes = {path: path.stat().st_size for path in self._files}
        self.bytes = sum(self._sizes.values())
        self._next = int(self._files[-1].stem) + 1 if self._files else 0

    def __len__(self) -> int:
        return len(self._files)

    def fits(self, size: int) -> bool:
        return self.bytes + size <= self.max_bytes or not self._files

    def append(self, batch: Batch) -> int:
        """Write `batch` durably at the tail; returns its sequence number."""
        data = encode_batch(batch)
        sequence = self._next
        self._next += 1
        final = self._path(sequence)
        write_atomically(final, data, fsync=self.fsync)
        self._files.append(final)
        self._sizes[final] = len(data)
        self.bytes += len(data)
        return sequence

    def head(self) -> tuple[int, Batch] | None:
        """The oldest batch and its sequence number; corrupt files are set aside, not replayed."""
        while self._files:
            path = self._files[0]
            try:
                return int(path.stem), decode_batch(path.read_bytes())
            except (OSError, SpoolCorruptError) as error:
                # Its data will not be sent: say so, it must never go unnoticed (a file source
                # re-reads it after a restart from its checkpoint, if the file is still there).
                log.error(
                    "spooled batch unreadable; set aside, not sent",
                    extra={"path": str(path), "error": repr(error)},
                )
                self._discard(path, rename_to=path.with_suffix(".corrupt"))
        return None

    def remove(self, sequence: int) -> None:
        """Forget batch `sequence`: delivered, or dropped to make room. By its number, not "the
        head": the drainer sends the head outside delivery's lock, and a full spool may drop that
        very batch meanwhile; the head by the time the send returns is a batch never sent."""
        path = self._path(sequence)
        if path in self._sizes:
            self._discard(path)

    def _path(self, sequence: int) -> Path:
        return self.directory / f"{sequence:020d}.batch"

    def _discard(self, path: Path, rename_to: Path | None = None) -> None:
        self._files.remove(path)
        self.bytes -= self._sizes.pop(path, 0)
        if rename_to is not None:
            path.replace(rename_to)
        else:
            path.unlink(missing_ok=True)
