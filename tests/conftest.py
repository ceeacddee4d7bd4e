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
    # Only the servers this session starts are stopped after it: another session (or a developer's
    # `tether stack up`) may be using the others.
    started = [server for server in stack.servers if not server.process.is_running()]
    stack.up(report=lambda line: print(f"[stack] {line}", flush=True))
    yield stack
    if os.environ.get("TETHER_KEEP_STACK") != "1":
        for server in reversed(started):
            server.process.stop()
            print(f"[stack] {server.name}: stopped", flush=True)


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    yield
    from tests.e2e.agent_harness import TetherProcess

    TetherProcess.reap()
