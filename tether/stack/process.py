"""Start, identify and stop the stack's server processes by pid.

A pid file records the pid *and* the process start time, so a recycled pid that now
belongs to someone else's process is never mistaken for ours and never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def _start_time(pid: int) -> int | None:
    """Clock ticks since boot at which live process `pid` started (field 22 of /proc/pid/stat).

    None when there is no such process or it has exited and is only a zombie.
    """
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


@dataclass(frozen=True)
class ManagedProcess:
    """One server process owned by the stack, identified by its pid file."""

    name: str
    pid_file: Path
    log_file: Path

    def read_pid(self) -> int | None:
        """The pid of our still-running process, or None when it is gone or was never started."""
        try:
            record = json.loads(self.pid_file.read_text())
            pid, started = int(record["pid"]), int(record["start_time"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no pid file, or one we cannot vouch for: never signal on a guess
        return pid if _start_time(pid) == started else None

    def is_running(self) -> bool:
        return self.read_pid() is not None

    def start(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> int:
        """Start `argv` detached in its own session, output appended to the log file."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
            )
        started = _start_time(proc.pid)
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "start_time": started, "argv": list(argv)}))
        return proc.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM our process group, SIGKILL it after `timeout`. True when something was stopped."""
        pid = self.read_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        # The process leads its own session, so its group id is its pid: this reaches the
        # children it spawned (Elasticsearch's native controller) and nothing else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pid):
            _reap(pid)
            time.sleep(0.2)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _group_alive(pid):
                _reap(pid)
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log yet)"


def run_checked(
    argv: Sequence[str], what: str, *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> None:
    """Run a provisioning command to completion; on failure raise with the tail of its output."""
    from tether.stack.health import StackError

    result = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise StackError(f"{what} failed ({' '.join(argv[:3])} ...):\n{tail}")


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still "exists" for kill(); treat a group of only zombies as gone.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
