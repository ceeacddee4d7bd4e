"""The agent's own Kafka record batches: aiokafka's wire format, the zstd or lz4 level the agent chose."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Literal

import cramjam
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, codec
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from tether.agent.config import KafkaSinkConfig
from tether.agent.sinks import kafka_batch
from tether.agent.sinks.kafka import KafkaSink
from tether.agent.sinks.kafka_batch import CODEC_LZ4, CODEC_NONE, CODEC_ZSTD, RecordBatchBuilder, lz4_frame
from tether.stack import Stack
from tether.stack.kafka import ensure_topics

Record = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def _records(seed: int, count: int) -> list[Record]:
    rng = random.Random(seed)
    out: list[Record] = []
    for n in range(count):
        key = None if rng.random() < 0.5 else rng.randbytes(rng.randrange(0, 40))
        value = None if rng.random() < 0.1 else rng.randbytes(rng.choice((0, 1, 127, 128, 300, 20000)))
        headers = [
            (rng.choice(("tether.schema", "x", "ключ")), None if rng.random() < 0.2 else rng.randbytes(9))
            for _ in range(rng.randrange(0, 3))
        ]
        # deltas past one varint byte, and a timestamp going back (deltas are signed)
        out.append((1_763_700_000_000 + rng.randrange(-5000, 10**6) * (n > 0), key, value, headers))
    return out


def _fill(builder: object, records: list[Record]) -> None:
    for timestamp, key, value, headers in records:
        assert builder.append(timestamp=timestamp, key=key, value=value, headers=headers) is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", range(20))
def test_uncompressed_batch_is_byte_identical_to_aiokafkas(seed: int) -> None:
    records = _records(seed, 1 + seed % 7)
    ours = RecordBatchBuilder(CODEC_NONE, 10**7, level=1)
    theirs = BatchBuilder(10**7, CODEC_NONE)
    _fill(ours, records)
    _fill(theirs, records)
    for builder in (ours, theirs):
        builder._set_producer_state(4711 + seed, 3, 1000 * seed)
    assert ours.record_count() == theirs.record_count()
    assert ours.size() == theirs.size()
    assert bytes(ours._build()) == bytes(theirs._build())


@pytest.mark.parametrize("level", [-3, -2, 1, 3, 19])
def test_zstd_batch_decodes_and_uses_the_level(level: int) -> None:
    records: list[Record] = [
        (1_763_700_000_000 + n, None, b'{"level":"info","message":"m %d"}' % n * 40, []) for n in range(50)
    ]
    builder = RecordBatchBuilder(CODEC_ZSTD, 10**7, level=level)
    _fill(builder, records)
    builder._set_producer_state(7, 1, 42)
    buffer = bytes(builder._build())
    batch = DefaultRecordBatch(buffer)
    assert batch.validate_crc()
    assert batch.compression_type == CODEC_ZSTD
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (7, 1, 42)
    decoded = [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch]
    assert decoded == [(n, t, k, v, h) for n, (t, k, v, h) in enumerate(records)]
    # the compressed records are exactly zstd at that level
    header_size = 61
    plain = RecordBatchBuilder(CODEC_NONE, 10**7, level=level)
    _fill(plain, records)
    raw_records = bytes(plain._build())[header_size:]
    assert bytes(cramjam.zstd.decompress(buffer[header_size:])) == raw_records
    # fed piece by piece, the stream is what zstd makes of the joined records at that level
    whole = cramjam.zstd.Compressor(level=level)
    whole.compress(raw_records)
    assert buffer[header_size:] == bytes(whole.finish())


@pytest.mark.parametrize("level", [0, 1, 9])
def test_lz4_batch_is_aiokafkas_frame_at_our_level(level: int) -> None:
    records: list[Record] = [
        (1_763_700_000_000 + n, None, b'{"level":"info","message":"m %d"}' % n * 40, []) for n in range(500)
    ]
    builder = RecordBatchBuilder(CODEC_LZ4, 10**7, level=level)
    _fill(builder, records)
    buffer = bytes(builder._build())
    batch = DefaultRecordBatch(buffer)
    assert batch.validate_crc()
    assert batch.compression_type == CODEC_LZ4
    decoded = [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch]
    assert decoded == [(n, t, k, v, h) for n, (t, k, v, h) in enumerate(records)]
    plain = RecordBatchBuilder(CODEC_NONE, 10**7, level=level)
    _fill(plain, records)
    raw_records = bytes(plain._build())[61:]
    # aiokafka's own lz4 at the same level writes the same bytes: same frame, only the level is ours
    assert buffer[61:] == lz4_frame(raw_records, level) == codec.lz4_encode(raw_records, level=level)
    assert codec.lz4_decode(buffer[61:]) == raw_records


def test_incompressible_records_go_uncompressed() -> None:
    builder = RecordBatchBuilder(CODEC_ZSTD, 10**7, level=1)
    _fill(builder, [(1, None, random.Random(1).randbytes(5000), [])])
    batch = DefaultRecordBatch(bytes(builder._build()))
    assert batch.validate_crc()
    assert batch.compression_type == 0
    assert len(list(batch)) == 1


def test_a_full_batch_refuses_and_closes_but_always_takes_its_first_record() -> None:
    builder = RecordBatchBuilder(CODEC_NONE, 1000, level=1)
    assert builder.append(timestamp=1, key=None, value=b"x" * 5000, headers=[]) is not None
    assert builder.append(timestamp=1, key=None, value=b"y", headers=[]) is None
    assert builder.closed()
    small = RecordBatchBuilder(CODEC_NONE, 1000, level=1)
    appended = 0
    while small.append(timestamp=1, key=None, value=b"z" * 100, headers=[]) is not None:
        appended += 1
    assert appended == (1000 - 61) // 106  # 61 B header, 106 B per record
    assert small.size() <= 1000
    built = small._build()
    assert small.size() == len(built)
    assert small.append(timestamp=1, key=None, value=b"z", headers=[]) is None


def test_install_is_scoped_to_one_producer() -> None:
    async def check() -> None:
        ours = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", compression_type="zstd")
        other = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", compression_type="zstd")
        assert kafka_batch.install(ours, "zstd", 5)
        batch = ours.create_batch()
        assert isinstance(batch, RecordBatchBuilder)
        assert (batch.codec_id, batch.level) == (CODEC_ZSTD, 5)
        assert not isinstance(other.create_batch(), RecordBatchBuilder)

    asyncio.run(check())


@pytest.mark.stack
@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_sink_records_round_trip_through_kafka(stack: Stack, compression: Literal["zstd", "lz4"]) -> None:
    """Through the real broker (which validates compressed batches) and back by aiokafka's consumer,
    as the collector reads them."""
    topic = f"test.{uuid.uuid4().hex[:8]}.logs"
    values = {p: (b'{"message":"line %d"}\n' % p) * (1000 + p) for p in range(4)}

    async def run() -> dict[int, list[tuple[bytes, list[tuple[str, bytes]]]]]:
        await ensure_topics(stack.kafka.bootstrap, [topic, topic + ".spans"], 4)
        sink = KafkaSink(
            KafkaSinkConfig(
                bootstrap_servers=stack.kafka.bootstrap,
                logs_topic=topic,
                spans_topic=topic + ".spans",
                compression=compression,
            )
        )
        await sink.start()
        try:
            batch = sink._producer.create_batch()
            assert isinstance(batch, RecordBatchBuilder)
            assert batch.codec_id == kafka_batch.CODECS[compression]
            await sink.send("logs", values)
            await sink.send("logs", {0: b"second"})
        finally:
            await sink.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=stack.kafka.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        got: dict[int, list[tuple[bytes, list[tuple[str, bytes]]]]] = {}
        try:
            while sum(map(len, got.values())) < 5:
                for tp, messages in (await consumer.getmany(timeout_ms=10_000)).items():
                    for message in messages:
                        assert message.value is not None
                        got.setdefault(tp.partition, []).append((message.value, list(message.headers)))
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    assert sorted(got) == [0, 1, 2, 3]
    assert [value for value, _ in got[0]] == [values[0], b"second"]
    for partition in (1, 2, 3):
        assert [value for value, _ in got[partition]] == [values[partition]]
    assert all(
        headers and headers[0][0] == "tether.schema" for records in got.values() for _, headers in records
    )
