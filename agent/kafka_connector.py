"""Connecting to Kafka in the background, so that the agent accepts data while Kafka is away.

The agent's receivers and file source start at once; what they accept goes to the spool while the
sink is not connected (its sends fail fast). This keeps trying to start the sink with backoff,
naming the setting it cannot reach, and once Kafka answers: remembers the topics' partition count
in data_dir (agent/partition_memory.py), tells the sources to split with it, and wakes the
spool's drainer. Topics whose partition counts differ are fatal, as they were at start: no split
could keep a trace's logs and spans in the same-numbered partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Protocol

from aiokafka.errors import KafkaError

from tether.agent.partition_memory import PartitionMemory
from tether.agent.sinks.kafka import AGENT_ACLS, PartitionMismatchError
from tether.kafka_errors import KafkaSecurityError, explain_authorization

log = logging.getLogger("tether.agent.kafka")

SETTING = "kafka.bootstrap_servers"


class StartableSink(Protocol):
    partitions: int

    async def start(self) -> None: ...


class KafkaConnector:
    def __init__(
        self,
        sink: StartableSink,
        bootstrap_servers: str,
        memory: PartitionMemory,
        on_connected: Callable[[int], None],
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self.sink = sink
        self.bootstrap_servers = bootstrap_servers
        self.memory = memory
        self.on_connected = on_connected
        self.max_backoff_seconds = max_backoff_seconds
        self.connected = False
        self.attempts = 0
        self.last_error: str | None = None
        self.refused = False  # the last attempt failed for a security reason (KafkaSecurityError)
        self.fatal: Exception | None = None  # the agent stops and run_agent raises it

    def not_ready_reason(self) -> str | None:
        if self.connected:
            return None
        if self.refused:  # the message names the security setting to fix
            return f"Kafka refused the connection: {self.last_error}"
        return f"Kafka unreachable ({SETTING}={self.bootstrap_servers}): {self.last_error or 'connecting'}"

    async def run(self, stop: asyncio.Event) -> None:
        """Until connected, or `stop`. Topics with different partition counts, or an error that
        is no connection failure, set `fatal` and `stop`: the agent exits and says why."""
        while not stop.is_set():
            try:
                await self.sink.start()
            except PartitionMismatchError as error:
                self.fatal = error
                log.error("cannot run: the topics' partition counts differ", extra={"error": str(error)})
                stop.set()
                return
            except (KafkaError, OSError) as error:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._failed(error))
                continue
            except Exception as error:  # a bug: stop rather than spool forever without saying so
                self.fatal = error
                log.exception("cannot connect to Kafka: unexpected error")
                stop.set()
                return
            partitions = self.sink.partitions
            self.connected = True
            self.last_error = None
            try:
                self.memory.remember(partitions)
            except OSError as error:  # only a guess for the next start: not worth stopping for
                log.warning("could not remember the partition count", extra={"error": repr(error)})
            log.info(
                "connected to Kafka",
                extra={
                    "bootstrap_servers": self.bootstrap_servers,
                    "partitions": partitions,
                    "attempts": self.attempts + 1,
                },
            )
            self.on_connected(partitions)
            return

    def _failed(self, error: Exception) -> float:
        """Count and log a failed attempt; the seconds to wait before the next one."""
        self.attempts += 1
        acl_refusal = explain_authorization(error, AGENT_ACLS)
        if acl_refusal is not None:  # authenticated, but its ACLs do not cover the topics
            error = KafkaSecurityError(acl_refusal)
        self.refused = isinstance(error, KafkaSecurityError)
        self.last_error = str(error) if self.refused else repr(error)
        delay = random.uniform(0, min(self.max_backoff_seconds, 0.5 * 2 ** min(self.attempts, 8)))
        if self.refused:  # TLS, SASL or ACLs: reachable, but a setting must change (it names which)
            log.error(
                "Kafka refused the connection; accepting into the spool meanwhile and retrying",
                extra={
                    "error": self.last_error,
                    "attempt": self.attempts,
                    "retry_in_seconds": round(delay, 2),
                },
            )
            return delay
        log.warning(
            f"cannot reach Kafka at {SETTING}={self.bootstrap_servers}; accepting into the "
            "spool meanwhile and retrying",
            extra={
                "setting": SETTING,
                "bootstrap_servers": self.bootstrap_servers,
                "error": repr(error),
                "attempt": self.attempts,
                "retry_in_seconds": round(delay, 2),
            },
        )
        return delay
