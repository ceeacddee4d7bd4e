"""Fail points: parsed from TETHER_FAILPOINTS, crash on the armed hit only, cost nothing unset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tether.failpoints import ENVIRONMENT_VARIABLE, FailPoints


def test_crashes_on_the_armed_hit_only() -> None:
    crashes: list[str] = []
    points = FailPoints.parse(
        " agent.after_kafka_ack=3, collector.before_commit ", lambda: crashes.append("x")
    )
    assert points.armed == {"agent.after_kafka_ack": 3, "collector.before_commit": 1}
    for _ in range(2):
        points.reach("agent.after_kafka_ack")
        points.reach("agent.after_checkpoint")  # not armed: never counts, never crashes
    assert crashes == []
    points.reach("agent.after_kafka_ack")
    assert crashes == ["x"]
    points.reach("agent.after_kafka_ack")  # past the armed hit: once only
    assert crashes == ["x"]
    points.reach("collector.before_commit")
    assert crashes == ["x", "x"]
    assert points.reached == {"agent.after_kafka_ack": 4, "collector.before_commit": 1}


@pytest.mark.parametrize("spec", ["agent.after_kafka_ack=three", "agent.after_kafka_ack=0"])
def test_a_bad_spec_names_the_variable(spec: str) -> None:
    with pytest.raises(ValueError, match=ENVIRONMENT_VARIABLE):
        FailPoints.parse(spec)


def _run(env_spec: str | None) -> subprocess.CompletedProcess[str]:
    code = (
        "from tether import failpoints\n"
        "for n in range(1, 6):\n"
        "    print(n, flush=True)\n"
        "    failpoints.reach('agent.after_checkpoint')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ENVIRONMENT_VARIABLE}
    if env_spec is not None:
        env[ENVIRONMENT_VARIABLE] = env_spec
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_the_environment_arms_a_real_sigkill_and_unset_does_nothing() -> None:
    armed = _run("agent.after_checkpoint=2")
    assert armed.returncode == -signal.SIGKILL
    assert armed.stdout.split() == ["1", "2"]
    unset = _run(None)
    assert unset.returncode == 0 and unset.stdout.split() == ["1", "2", "3", "4", "5"]
