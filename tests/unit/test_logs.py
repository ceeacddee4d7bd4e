"""Our own logs: JSON lines, and client-library noise rate-limited during outages."""

from __future__ import annotations

import io
import logging

import orjson

from tether.logs import JsonFormatter, RateLimit


def _capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RateLimit(prefixes=("aiokafka",), seconds=60))
    logger = logging.getLogger("test-root")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger, stream


def test_repeated_client_errors_are_held_back_but_ours_are_not() -> None:
    logger, stream = _capture()
    noisy = logger.getChild("aiokafka.conn")
    noisy.name = "aiokafka.conn"  # as the library names it
    for _ in range(1000):
        noisy.error("Unable connect to node with id %s", 1)
    ours = logging.getLogger("test-root").getChild("tether.agent")
    for n in range(3):
        ours.warning("Kafka unavailable; spool waits", extra={"attempt": n})
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines].count("Unable connect to node with id 1") == 1
    assert [line.get("attempt") for line in lines if line["message"].startswith("Kafka")] == [0, 1, 2]
    assert all(line["@timestamp"].endswith("Z") and "log.level" in line for line in lines)
