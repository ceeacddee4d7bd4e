"""Session fixtures: the real local stack, started once per test session by the project's own code."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from tether.stack import ClusterStack, ClusterStackConfig, SecureStack, SecureStackConfig, Stack, StackConfig
from tether.stack.kafka import delete_topics, list_topics


def _delete_topics_made_since(bootstrap: str, before: set[str], label: str) -> None:
    """Topics the session made (tests name theirs per run): each holds partitions a broker opens
    files for at every start. Left behind, sessions added up to ~20,000 partitions, the broker then
    took 6 minutes to start and stopped on "Too many open files"."""
    try:
        made = asyncio.run(list_topics(bootstrap)) - before
        asyncio.run(delete_topics(bootstrap, made))
    except Exception as error:  # the tests have run: a broker the session broke is no test failure
        print(f"[{label}] topics this session made were not deleted: {error!r}", flush=True)
        return
    print(f"[{label}] deleted the {len(made)} topics this session made", flush=True)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Kafka, Elasticsearch and Jaeger on 127.0.0.1. Reuses a running stack; stops only what it started."""
    stack = Stack(StackConfig())
    # Only the servers this session starts are stopped after it: another session (or a developer's
    # `tether stack up`) may be using the others.
    started = [server for server in stack.servers if not server.process.is_running()]
    stack.up(report=lambda line: print(f"[stack] {line}", flush=True))
    topics_before = asyncio.run(list_topics(stack.kafka.bootstrap))
    yield stack
    if os.environ.get("TETHER_KEEP_STACK") != "1":  # with it, other sessions may share the broker
        if stack.kafka.process.is_running():
            _delete_topics_made_since(stack.kafka.bootstrap, topics_before, "stack")
        for server in reversed(started):
            server.process.stop()
            print(f"[stack] {server.name}: stopped", flush=True)


@pytest.fixture(scope="session")
def secure_stack() -> Iterator[SecureStack]:
    """The same servers with TLS and authentication, on their own ports (`tether stack up --secure`):
    certificates in `.certificates`, users and passwords in `.credentials`. Stops only what it started."""
    stack = SecureStack(SecureStackConfig())
    started = [server for server in stack.servers if not server.process.is_running()]

    def stop_started() -> None:
        for server in reversed(started):
            if server.process.stop():
                print(f"[secure stack] {server.name}: stopped", flush=True)

    try:
        stack.up(report=lambda line: print(f"[secure stack] {line}", flush=True))
    except BaseException:
        stop_started()  # a failed start leaves no half stack behind
        raise
    yield stack
    if os.environ.get("TETHER_KEEP_STACK") != "1":
        stop_started()


@pytest.fixture(scope="session")
def cluster_stack() -> Iterator[ClusterStack]:
    """Three Kafka brokers (topics: replication factor 3, min.insync.replicas 2), two Elasticsearch
    nodes (one replica per shard) and Jaeger, on their own ports (`tether stack up --cluster`).
    Reuses a running cluster; stops only what it started, and only without TETHER_KEEP_STACK=1."""
    stack = ClusterStack(ClusterStackConfig())
    started = [server for server in stack.servers if not server.process.is_running()]

    def stop_started() -> None:
        # All at once: brokers stopped one by one leave the last without a quorum to shut down with.
        for server, stopped in zip(started, stack.stop(started), strict=True):
            if stopped:
                print(f"[cluster stack] {server.name}: stopped", flush=True)

    try:
        stack.up(report=lambda line: print(f"[cluster stack] {line}", flush=True))
    except BaseException:
        stop_started()  # a failed start leaves no half cluster behind
        raise
    topics_before = asyncio.run(list_topics(stack.kafka.bootstrap))
    yield stack
    if os.environ.get("TETHER_KEEP_STACK") != "1":
        _delete_topics_made_since(stack.kafka.bootstrap, topics_before, "cluster stack")
        stop_started()


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    yield
    from tests.e2e.agent_harness import TetherProcess

    TetherProcess.reap()
