"""Jaeger v2, built from the Go module proxy with the tool module in deploy/jaeger."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tether.stack.health import StackError, http_ok, port_owner_hint, tcp_open, wait_until_healthy
from tether.stack.process import ManagedProcess, run_checked


@dataclass(frozen=True)
class JaegerServer:
    home: Path
    bin_dir: Path
    deploy_dir: Path
    host: str
    otlp_grpc_port: int
    otlp_http_port: int
    query_port: int
    query_grpc_port: int
    health_port: int
    metrics_port: int

    name = "jaeger"

    @property
    def module_dir(self) -> Path:
        return self.deploy_dir / "jaeger"

    @property
    def version(self) -> str:
        """The Jaeger module version pinned in deploy/jaeger/go.mod."""
        match = re.search(
            r"github\.com/jaegertracing/jaeger (v\S+)", (self.module_dir / "go.mod").read_text()
        )
        if match is None:
            raise StackError(f"{self.module_dir / 'go.mod'} does not require github.com/jaegertracing/jaeger")
        return match.group(1)

    @property
    def release(self) -> str:
        """Jaeger tags each release twice on one module: v1.N.P is the v2 binary's v2.(N-63).P."""
        major, minor, patch = self.version.lstrip("v").split(".")
        return f"v2.{int(minor) - 63}.{patch}" if major == "1" else self.version

    @property
    def binary(self) -> Path:
        return self.bin_dir / f"jaeger-{self.version}"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("jaeger", self.home / "jaeger.pid", self.home / "logs" / "jaeger.log")

    @property
    def query_url(self) -> str:
        return f"http://{self.host}:{self.query_port}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"{self.host}:{self.otlp_grpc_port}"

    def describe(self) -> str:
        return (
            f"Jaeger {self.release} (module {self.version}) OTLP gRPC {self.otlp_grpc_endpoint}, "
            f"OTLP HTTP {self.host}:{self.otlp_http_port}, UI/API {self.query_url}"
        )

    def provision(self) -> None:
        if self.binary.exists():
            return
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        # Per process: two provisions at once (a test session and `tether stack up`) must not share it.
        partial = self.binary.with_name(f"{self.binary.name}.{os.getpid()}.partial")
        env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
        run_checked(
            [
                "go",
                "build",
                "-trimpath",
                "-ldflags",
                "-s -w",
                "-o",
                str(partial),
                "github.com/jaegertracing/jaeger/cmd/jaeger",
            ],
            "building Jaeger with the Go toolchain",
            cwd=self.module_dir,
            env=env,
        )
        partial.rename(self.binary)

    def start(self) -> None:
        if self.process.is_running():
            return
        for port in (self.otlp_grpc_port, self.query_port):
            if tcp_open(self.host, port):
                raise StackError(port_owner_hint(self.host, port))
        template = resources.files("tether.stack").joinpath(self.config_template).read_text()
        values = self.template_values()
        config = self.home / "jaeger.yaml"
        self.home.mkdir(parents=True, exist_ok=True)
        config.write_text(re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), template))
        self.process.start([str(self.binary), "--config", str(config)], cwd=self.home)

    config_template = "jaeger.yaml"

    def template_values(self) -> dict[str, object]:
        """What the config template's {placeholders} are filled with."""
        return {
            k: getattr(self, k)
            for k in (
                "host",
                "otlp_grpc_port",
                "otlp_http_port",
                "query_port",
                "query_grpc_port",
                "health_port",
                "metrics_port",
            )
        }

    def wait_healthy(self, timeout: float) -> None:
        wait_until_healthy(self.process, self._ready, timeout=timeout, what="health check and query API")

    def _ready(self) -> bool:
        return http_ok(f"http://{self.host}:{self.health_port}/status") and http_ok(
            f"{self.query_url}/api/services"
        )
