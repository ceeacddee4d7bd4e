"""Kafka record batches (message format v2) built by the agent, so that it chooses the compression level.

aiokafka compresses each record batch with zstd at a fixed level 3 and lz4 at a fixed level 9 (high
compression mode, slow) and has no option for either. On the agent's records (OTLP log requests of
JSON lines) lower levels and zstd's fast mode cost much less CPU for a little less compression, and
compression is the largest single cost of the agent after parsing (docs/performance-history.md has
the figures).
So the sink's producer gets this builder instead of aiokafka's: the same
wire format (an uncompressed batch is byte-identical to aiokafka's, and lz4 is the same frame
format aiokafka writes, see tests/unit/test_agent_kafka_batch.py), the records compressed at the
configured level.

The agent sends few, large records (one per partition per file chunk), so building a batch in
Python costs a few microseconds per record: nothing next to compressing ~100 kB.

Only this producer's accumulator is given the builder (`install`), nothing process-wide changes.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cramjam
import crc32c
from aiokafka import codec

log = logging.getLogger("tether.agent.kafka")

# RecordBatch header: BaseOffset, Length, PartitionLeaderEpoch, Magic, CRC, Attributes,
# LastOffsetDelta, FirstTimestamp, MaxTimestamp, ProducerId, ProducerEpoch, BaseSequence, Records
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC_OFFSET = struct.calcsize(">qiib")
_ATTRIBUTES_OFFSET = struct.calcsize(">qiibI")
_AFTER_LENGTH = struct.calcsize(">qi")

CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD = range(5)
CODECS = {
    "none": CODEC_NONE,
    "gzip": CODEC_GZIP,
    "snappy": CODEC_SNAPPY,
    "lz4": CODEC_LZ4,
    "zstd": CODEC_ZSTD,
}

Header = tuple[str, bytes | None]
Buffer = Any  # bytes, or cramjam's Buffer (both with the buffer protocol)


def _varint(value: int) -> bytes:
    """Kafka's zigzag varint."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


_NULL = _varint(-1)


@dataclass(slots=True, frozen=True)
class RecordMetadata:
    """What aiokafka's MessageBatch reads of an appended record."""

    offset: int
    size: int
    timestamp: int


class RecordBatchBuilder:
    """One v2 record batch, with the interface aiokafka's producer uses of its own BatchBuilder
    (append, close, closed, size, record_count, _set_producer_state, _build)."""

    def __init__(self, codec_id: int, batch_size: int, *, level: int) -> None:
        self.codec_id = codec_id
        self.batch_size = batch_size
        self.level = level  # of zstd or lz4; gzip and snappy use aiokafka's defaults
        self.producer_id = -1
        self.producer_epoch = -1
        self.base_sequence = -1
        self._parts: list[bytes] = []  # the records, in pieces
        self._count = 0
        self._size = _HEADER.size
        self._first_timestamp: int | None = None
        self._max_timestamp = 0
        self._closed = False
        self._buffer: bytes | None = None

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[Header] | None = None,
    ) -> RecordMetadata | None:
        """None when closed or when the record does not fit (a batch always takes its first)."""
        if self._closed:
            return None
        if timestamp is None:
            timestamp = int(time.time() * 1000)
        first = self._first_timestamp if self._first_timestamp is not None else timestamp
        offset = self._count
        headers = headers or ()
        # The pieces are joined once, in _encode: a value (~100 kB) is copied there only.
        parts = [b"\x00", _varint(timestamp - first), _varint(offset)]  # attributes, deltas
        if key is None:
            parts.append(_NULL)
        else:
            parts += (_varint(len(key)), key)
        if value is None:
            parts.append(_NULL)
        else:
            parts += (_varint(len(value)), value)
        parts.append(_varint(len(headers)))
        for name, data in headers:
            raw = name.encode()
            parts += (_varint(len(raw)), raw)
            if data is None:
                parts.append(_NULL)
            else:
                parts += (_varint(len(data)), data)
        body_size = sum(map(len, parts))
        length = _varint(body_size)
        size = len(length) + body_size
        if self._count and self._size + size > self.batch_size:
            self._closed = True
            return None
        self._parts.append(length)
        self._parts += parts
        self._count += 1
        self._size += size
        self._first_timestamp = first
        self._max_timestamp = max(self._max_timestamp, timestamp)
        return RecordMetadata(offset, size, timestamp)

    def close(self) -> None:
        self._closed = True

    def closed(self) -> bool:
        return self._closed

    def size(self) -> int:
        return len(self._buffer) if self._buffer is not None else self._size

    def record_count(self) -> int:
        return self._count

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        self.producer_id, self.producer_epoch, self.base_sequence = producer_id, producer_epoch, base_sequence

    def _build(self) -> bytes:
        """The batch on the wire; built once (a retry sends the same bytes)."""
        self._closed = True
        if self._buffer is None:
            self._buffer = self._encode()
        return self._buffer

    def _encode(self) -> bytes:
        parts, self._parts = self._parts, []
        records: Buffer = b""
        attributes = 0
        if self.codec_id != CODEC_NONE:
            compressed = self._compress(parts)
            if len(compressed) < self._size - _HEADER.size:  # else sent uncompressed, as aiokafka does
                records, attributes = compressed, self.codec_id
        if not attributes:
            records = b"".join(parts)
        count = self._count
        header = bytearray(_HEADER.size)
        _HEADER.pack_into(
            header,
            0,
            0,  # base offset: set by the broker
            _HEADER.size + len(records) - _AFTER_LENGTH,
            -1,  # partition leader epoch
            2,  # magic
            0,  # crc, below
            attributes,
            max(count - 1, 0),  # last offset delta
            self._first_timestamp or 0,
            self._max_timestamp,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            count,
        )
        crc = crc32c.crc32c(records, crc32c.crc32c(memoryview(header)[_ATTRIBUTES_OFFSET:]))
        struct.pack_into(">I", header, _CRC_OFFSET, crc)
        return b"".join((header, records))  # the records' only copy after compression

    def _compress(self, parts: list[bytes]) -> Buffer:
        """The records compressed as one stream, fed piece by piece: joining them first would copy
        the whole batch once more (a zstd or lz4 stream compresses the same bytes either way)."""
        if self.codec_id == CODEC_ZSTD:
            compressor: Any = cramjam.zstd.Compressor(level=self.level)
        elif self.codec_id == CODEC_LZ4:
            compressor = _lz4_compressor(self.level)
        else:
            encode: Callable[[bytes], bytes] = {
                CODEC_GZIP: codec.gzip_encode,
                CODEC_SNAPPY: codec.snappy_encode,
            }[self.codec_id]
            return encode(b"".join(parts))
        for part in parts:
            compressor.compress(part)
        compressed: Buffer = compressor.finish()
        return compressed


def _lz4_compressor(level: int) -> Any:
    """The LZ4 frame Kafka reads (KIP-57): independent blocks, no content checksum; the frame
    aiokafka's lz4_encode writes, at our level (0: lz4's fast mode; 3 and up: its slow HC mode)."""
    return cramjam.lz4.Compressor(level=level, content_checksum=False, block_linked=False)


def lz4_frame(data: bytes, level: int) -> bytes:
    compressor = _lz4_compressor(level)
    compressor.compress(data)
    return bytes(compressor.finish())


def install(producer: Any, codec_name: str, level: int) -> bool:
    """Make `producer` (an AIOKafkaProducer, not started) build its batches with
    RecordBatchBuilder. False (and aiokafka's own builder stays) if this aiokafka does not
    look as expected."""
    accumulator: Any = getattr(producer, "_message_accumulator", None)
    batch_size = getattr(accumulator, "_batch_size", None)
    txn_manager = getattr(accumulator, "_txn_manager", None)
    transactional = getattr(txn_manager, "transactional_id", None) is not None
    if not callable(getattr(accumulator, "create_builder", None)) or not isinstance(batch_size, int):
        log.warning("this aiokafka has no batch builder hook; compression level not applied")
        return False
    if transactional:
        return False  # our batches carry no transactional flag
    codec_id = CODECS[codec_name]

    def create_builder(key_serializer: object = None, value_serializer: object = None) -> RecordBatchBuilder:
        if key_serializer is not None or value_serializer is not None:
            raise ValueError("the agent's batches take bytes only")
        return RecordBatchBuilder(codec_id, batch_size, level=level)

    # An attribute of this one accumulator instance, so other producers are untouched.
    accumulator.create_builder = create_builder
    return True
