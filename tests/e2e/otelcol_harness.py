"""The OpenTelemetry Collector peer as a real process: built by bench/peers/build_otelcol.sh (cached
under ~/.cache/tether/peers), run with a configuration of bench/peers/configs.py, read through its
own Prometheus metrics."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.e2e.agent_harness import TetherProcess

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "bench" / "peers"


def otelcol_binary(profile: str = "peer") -> Path:
    """The peer's binary of build_otelcol.sh's `profile` ("peer", or "collector-peer" with the
    elasticsearch exporter): the build script is a no-op once cached; a first build (Go modules from
    the proxy, then compiling) is said on stderr with its duration."""
    began = time.perf_counter()
    done = subprocess.run(
        ["bash", str(PEERS / "build_otelcol.sh")],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PROFILE": profile},
    )
    took = time.perf_counter() - began
    if took > 5:
        print(f"[otelcol] {profile} built in {took:.0f} s", file=sys.stderr, flush=True)
    return Path(done.stdout.strip().splitlines()[-1])


def peer_configs() -> ModuleType:
    """bench/peers/configs.py (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("peer_configs", PEERS / "configs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prometheus_sum(text: str, name: str) -> float:
    """The sum of every series of `name` (with or without the `_total` suffix)."""
    total = 0.0
    for line in text.splitlines():
        for candidate in (name, name + "_total"):
            if line.startswith(candidate + " ") or line.startswith(candidate + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


class OtelcolProcess:
    """One Collector: its configuration written to `work`, its stderr kept there, its metrics read
    from 127.0.0.1:`metrics_port`."""

    def __init__(
        self,
        binary: Path,
        work: Path,
        config: dict[str, Any],
        metrics_port: int,
        pin: list[str] | None = None,
    ) -> None:
        self.binary, self.work, self.metrics_port = binary, work, metrics_port
        self.config_path = work / f"otelcol-{metrics_port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = work / f"otelcol-{metrics_port}.err"
        self.pin = pin or []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, within: float = 60) -> None:
        """Until its metrics answer (its pipelines are built); fails at once if it exits."""
        with self.log.open("ab") as err:
            self.process = subprocess.Popen(
                [*self.pin, str(self.binary), "--config", f"file:{self.config_path}"],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        TetherProcess.launched.append(self.process)  # reaped if a test fails before stop()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                self.scrape()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"otelcol did not start:\n{self.tail()}")

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"otelcol exited with {self.process.returncode}:\n{self.tail()}")

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name: str) -> float:
        """A metric summed over its series; 0 while the process does not answer."""
        try:
            return prometheus_sum(self.scrape(), name)
        except OSError:
            return 0.0

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise AssertionError(f"otelcol ignored SIGTERM:\n{self.tail()}") from None
        return self.process.returncode

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
