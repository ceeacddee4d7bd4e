"""Write blocks: Elasticsearch refusing writes until an operator or the disk lifts the block.

A flood-stage disk watermark sets `index.blocks.read_only_allow_delete` (429), an operator sets
`index.blocks.write` or `index.blocks.read_only` (403), or the whole cluster is blocked (403 on the
request). Elasticsearch calls every one a `cluster_block_exception`. None says the document is bad:
it is held and retried, never dead-lettered, and the commit watermark stays behind it.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Gauge

log = logging.getLogger("tether.collector.elasticsearch")

WRITE_BLOCK_ERROR = "cluster_block_exception"


def is_write_block(error: Any) -> bool:
    """Whether a bulk item's `error` object is a write block."""
    return isinstance(error, dict) and error.get("type") == WRITE_BLOCK_ERROR


def is_blocked_request(error: BaseException) -> bool:
    """Whether a whole request was refused by a block (an ApiError whose body says so)."""
    body = getattr(error, "body", None)
    return isinstance(body, dict) and is_write_block(body.get("error"))


class WriteBlocks:
    """How many deliveries are waiting on a block right now; readiness and a gauge read it."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._waiting = 0

    @property
    def blocked(self) -> bool:
        return self._waiting > 0

    def waiter(self) -> BlockWaiter:
        return BlockWaiter(self)

    def _hold(self, reason: str) -> None:
        if self._waiting == 0:
            log.warning(
                "Elasticsearch blocks writes; holding and retrying, nothing is dead-lettered",
                extra={"reason": reason},
            )
        self._waiting += 1
        self._gauge.set(1)

    def _release(self) -> None:
        self._waiting -= 1
        if self._waiting == 0:
            self._gauge.set(0)
            log.info("Elasticsearch accepts writes again")


class BlockWaiter:
    """One delivery's (or request's) view: blocked after a blocked round, unblocked after a clean
    one. Close it when done (even when cancelled) so the count stays true."""

    def __init__(self, blocks: WriteBlocks) -> None:
        self._blocks = blocks
        self._waiting = False

    def update(self, blocked_reason: str | None) -> None:
        if blocked_reason is not None and not self._waiting:
            self._blocks._hold(blocked_reason)
            self._waiting = True
        elif blocked_reason is None and self._waiting:
            self.close()

    def close(self) -> None:
        if self._waiting:
            self._waiting = False
            self._blocks._release()
