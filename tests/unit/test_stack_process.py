"""tether.stack.process: pid files that identify our process by pid and start time."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.stack.process import ManagedProcess


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat, read independently of the module under test."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")


@pytest.fixture
def managed(tmp_path: Path) -> Iterator[ManagedProcess]:
    process = ManagedProcess("sleeper", tmp_path / "run" / "sleeper.pid", tmp_path / "logs" / "sleeper.log")
    yield process
    # Never leave a sleep behind, whatever the test did (a corrupt pid file makes stop() raise).
    with contextlib.suppress(Exception):
        process.stop(timeout=2)


@pytest.fixture
def foreign() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not ours to stop (started here, not through a ManagedProcess)."""
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait(timeout=5)


def test_start_is_running_stop(managed: ManagedProcess, tmp_path: Path) -> None:
    assert not managed.is_running()
    pid = managed.start(["sleep", "30"], cwd=tmp_path)
    assert alive(pid)
    assert managed.is_running()
    assert managed.read_pid() == pid
    record = json.loads(managed.pid_file.read_text())
    assert record["pid"] == pid
    assert record["start_time"] == proc_start_time(pid)
    assert record["argv"] == ["sleep", "30"]
    assert os.getpgid(pid) == pid  # leads its own process group

    started = time.monotonic()
    assert managed.stop(timeout=5) is True
    assert time.monotonic() - started < 5  # sleep dies on SIGTERM: no SIGKILL wait
    assert not alive(pid)
    assert not managed.is_running()
    assert not managed.pid_file.exists()
    assert managed.stop(timeout=1) is False  # nothing left to stop


def test_output_goes_to_the_log_file(managed: ManagedProcess, tmp_path: Path) -> None:
    managed.start(["sh", "-c", "echo started-ok; exec sleep 30"], cwd=tmp_path)
    deadline = time.monotonic() + 5
    while "started-ok" not in managed.log_tail() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "started-ok" in managed.log_tail()
    assert managed.stop(timeout=5) is True


def test_stop_reaches_the_whole_process_group(managed: ManagedProcess, tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    managed.start(["sh", "-c", f"sleep 30 & echo $! > {child_pid_file}; wait"], cwd=tmp_path)
    deadline = time.monotonic() + 5
    while not child_pid_file.exists() or not child_pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(child_pid_file.read_text())
    assert alive(child)
    assert managed.stop(timeout=5) is True
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)  # the orphaned child is reaped by init, not by us
    assert not alive(child)


def test_mismatched_start_time_is_not_ours(managed: ManagedProcess, foreign: subprocess.Popen[bytes]) -> None:
    # A recycled pid: the pid file names a live process, but one that started at another time.
    managed.pid_file.parent.mkdir(parents=True)
    record = {"pid": foreign.pid, "start_time": proc_start_time(foreign.pid) + 12345, "argv": ["x"]}
    managed.pid_file.write_text(json.dumps(record))
    assert managed.read_pid() is None
    assert not managed.is_running()
    assert managed.stop(timeout=1) is False
    time.sleep(0.1)
    assert foreign.poll() is None  # never signalled
    assert alive(foreign.pid)
    assert not managed.pid_file.exists()  # the stale pid file is cleaned up


def test_matching_start_time_of_a_foreign_process_is_recognised(
    managed: ManagedProcess, foreign: subprocess.Popen[bytes]
) -> None:
    # The converse of the test above: with the right start time the same pid is ours.
    managed.pid_file.parent.mkdir(parents=True)
    record = {"pid": foreign.pid, "start_time": proc_start_time(foreign.pid), "argv": ["sleep", "30"]}
    managed.pid_file.write_text(json.dumps(record))
    assert managed.read_pid() == foreign.pid
    assert managed.stop(timeout=5) is True
    assert not alive(foreign.pid)


def test_dead_pid_is_not_running(managed: ManagedProcess) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    managed.pid_file.parent.mkdir(parents=True)
    managed.pid_file.write_text(json.dumps({"pid": proc.pid, "start_time": 1, "argv": ["true"]}))
    assert not managed.is_running()
    assert managed.stop(timeout=1) is False


@pytest.mark.parametrize("content", [None, "", "not json", '{"pid": 1'])
def test_missing_or_corrupt_pid_file_is_not_running(managed: ManagedProcess, content: str | None) -> None:
    if content is not None:
        managed.pid_file.parent.mkdir(parents=True)
        managed.pid_file.write_text(content)
    assert managed.read_pid() is None
    assert not managed.is_running()


def test_pid_file_without_start_time_is_not_running(managed: ManagedProcess) -> None:
    # start() writes "start_time": null when the process exited before its start time was read.
    managed.pid_file.parent.mkdir(parents=True)
    managed.pid_file.write_text(json.dumps({"pid": os.getpid(), "start_time": None, "argv": ["x"]}))
    assert managed.read_pid() is None
    assert not managed.is_running()
