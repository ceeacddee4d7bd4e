"""Session fixtures: the real local stack, started once per test session by the project's own code."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tether.stack import Stack, StackConfig


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Kafka, Elasticsearch and Jaeger on 127.0.0.1. Reuses a running stack; stops only what it started."""
    stack = Stack(StackConfig())
    already_up = all(pid is not None for _, pid, _, _ in stack.status())
    stack.up(report=lambda line: print(f"[stack] {line}", flush=True))
    yield stack
    if not already_up and os.environ.get("TETHER_KEEP_STACK") != "1":
        stack.down(report=lambda line: print(f"[stack] {line}", flush=True))


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    yield
    from tests.e2e.agent_harness import TetherProcess

    TetherProcess.reap()
