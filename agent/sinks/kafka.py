"""The Kafka sink: an idempotent aiokafka producer (acks=all) whose send returns only once acked."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer

from agent.config import KafkaSinkConfig
from schemas.records import LOGS_SCHEMA, SCHEMA_HEADER, SPANS_SCHEMA


class PartitionMismatchError(RuntimeError):
    pass


class KafkaSink:
    def __init__(self, config: KafkaSinkConfig) -> None:
        self.config = config
        self.partitions = 0
        self._producer = AIOKafkaProducer(
            bootstrap_servers=config.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            compression_type=None if config.compression == "none" else config.compression,
            linger_ms=config.linger_ms,
            max_batch_size=min(config.max_request_bytes, 1024 * 1024),
            max_request_size=config.max_request_bytes,
            request_timeout_ms=config.request_timeout_ms,
        )

    async def start(self) -> None:
        await self._producer.start()
        counts = {
            t: len(await self._producer.partitions_for(t))
            for t in (self.config.logs_topic, self.config.spans_topic)
        }
        if len(set(counts.values())) != 1:
            await self._producer.stop()
            raise PartitionMismatchError(
                f"topics must have the same partition count so a trace's logs and spans share a "
                f"partition number, but found {counts}; add partitions to the smaller topic"
            )
        self.partitions = next(iter(counts.values()))

    async def stop(self) -> None:
        await self._producer.stop()  # flushes what is pending

    async def send_logs(self, records: Mapping[int, bytes]) -> None:
        await self._send_all(self.config.logs_topic, records, LOGS_SCHEMA)

    async def send_spans(self, records: Mapping[int, bytes]) -> None:
        await self._send_all(self.config.spans_topic, records, SPANS_SCHEMA)

    async def _send_all(self, topic: str, records: Mapping[int, bytes], schema: bytes) -> None:
        """Send one record per partition; return when Kafka has acknowledged every one."""
        headers = [(SCHEMA_HEADER, schema)]
        pending = [
            await self._producer.send(topic, value, partition=partition, headers=headers)
            for partition, value in records.items()
        ]
        await asyncio.gather(*pending)
