"""Waiting for a server to become healthy: poll a real check, fail fast if the process died."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from tether.stack.process import ManagedProcess


class StackError(RuntimeError):
    """A stack server could not be provisioned or started; the message says what to look at."""


def wait_until_healthy(
    process: ManagedProcess, check: Callable[[], bool], *, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_running():
            raise StackError(
                f"{process.name} exited while starting; log {process.log_file}:\n{process.log_tail()}"
            )
        try:
            if check():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise StackError(
        f"{process.name} not healthy after {timeout:.0f}s ({what}); log {process.log_file}:\n"
        f"{process.log_tail()}"
    )


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def http_ok(url: str) -> bool:
    return http_get(url, timeout=2.0)[0] == 200


def port_owner_hint(host: str, port: int) -> str:
    return f"port {host}:{port} is already in use by a process this stack did not start"
