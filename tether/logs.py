"""Our own logs: one JSON object per line on stderr."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["error.stack_trace"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RateLimit(logging.Filter):
    """Lets each distinct message of the named loggers through once per `seconds`, and says how
    many it held back. Client libraries log every failed reconnect; during an outage that is
    thousands of lines a second."""

    def __init__(self, prefixes: tuple[str, ...], seconds: float = 10.0) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.seconds = seconds
        self._last: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        last, held = self._last.get(key, (0.0, 0))
        if now - last < self.seconds:
            self._last[key] = (last, held + 1)
            return False
        self._last[key] = (now, 0)
        if len(self._last) > 1000:  # bounded: forget the oldest keys
            for stale in sorted(self._last, key=lambda k: self._last[k][0])[:500]:
                del self._last[stale]
        if held:
            record.suppressed = held
        return True


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RateLimit(prefixes=("aiokafka", "elastic_transport", "grpc")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
