"""Fail points: deterministic crash points for the fault suite (tests/e2e/test_faults.py).

`TETHER_FAILPOINTS="agent.after_kafka_ack=3,collector.before_commit=5"` makes the process kill
itself with SIGKILL (no handler, no flush, no shutdown: a real crash) the 3rd time it reaches
`agent.after_kafka_ack`. The variable is read once, at import; unset, `reach` is one comparison
with None. The counts live in the `FailPoints` object the variable made, never in the module.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable, Mapping

ENVIRONMENT_VARIABLE = "TETHER_FAILPOINTS"


def _sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class FailPoints:
    """The armed points (name -> the hit that crashes) and how often each was reached."""

    def __init__(self, armed: Mapping[str, int], crash: Callable[[], None] = _sigkill_self) -> None:
        self.armed = dict(armed)
        self.crash = crash
        self.reached: Counter[str] = Counter()

    @classmethod
    def parse(cls, spec: str, crash: Callable[[], None] = _sigkill_self) -> FailPoints:
        """`name=n[,name=n...]`; a name without `=n` crashes the first time."""
        armed: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, count = item.partition("=")
            try:
                nth = int(count) if count else 1
            except ValueError:
                raise ValueError(f"{ENVIRONMENT_VARIABLE}: {item!r} is not name=count") from None
            if nth < 1:
                raise ValueError(f"{ENVIRONMENT_VARIABLE}: {item!r}: the count starts at 1")
            armed[name.strip()] = nth
        return cls(armed, crash)

    def reach(self, name: str) -> None:
        if name in self.armed:
            self.reached[name] += 1
            if self.reached[name] == self.armed[name]:
                self.crash()


_ARMED: FailPoints | None = (
    FailPoints.parse(os.environ[ENVIRONMENT_VARIABLE]) if os.environ.get(ENVIRONMENT_VARIABLE) else None
)


def reach(name: str) -> None:
    """Crash here if the environment armed `name` and this is its hit; nothing otherwise."""
    if _ARMED is not None:
        _ARMED.reach(name)
