"""The partition count of the agent's topics as last seen in Kafka, kept in data_dir.

An agent that starts while Kafka is unreachable splits what it accepts with this count, so that,
when the topics still have it once Kafka answers, nothing has to be split again
(agent/repartition.py). It is only a guess that saves work: a wrong or missing one costs a second
split before sending, never a misplaced record.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tether.agent.durable import write_atomically

log = logging.getLogger("tether.agent.partition_memory")

FILE_NAME = "kafka_partitions.json"


class PartitionMemory:
    def __init__(self, data_dir: Path, logs_topic: str, spans_topic: str) -> None:
        self.path = data_dir / FILE_NAME
        self.topics = {"logs_topic": logs_topic, "spans_topic": spans_topic}

    def recall(self) -> int | None:
        """The count saved for these topics, or None (never saved, other topics, unreadable)."""
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning(
                "ignoring an unreadable partition count",
                extra={"path": str(self.path), "error": repr(error)},
            )
            return None
        if not isinstance(saved, dict) or any(saved.get(k) != v for k, v in self.topics.items()):
            return None
        count = saved.get("partitions")
        return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None

    def remember(self, partitions: int) -> None:
        if self.recall() == partitions:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps({**self.topics, "partitions": partitions}).encode())
