"""Elasticsearch 8.x, single node, from Maven Central's integ-test-zip distribution.

Elasticsearch refuses to run as root. When the stack runs as root, Elasticsearch runs as an
unprivileged system user and its home, data and logs live under a directory that user can
enter (root's home cannot be entered by others).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from tether.stack.health import StackError, http_get, port_owner_hint, tcp_open, wait_until_healthy
from tether.stack.process import ManagedProcess, run_checked

ES_USER = "tether-es"

ELASTICSEARCH_YML = """\
cluster.name: tether-local
node.name: tether-local
network.host: {host}
http.port: {port}
transport.port: {transport_port}
discovery.type: single-node
xpack.security.enabled: false
path.data: {data}
path.logs: {logs}
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
"""


@dataclass(frozen=True)
class ElasticsearchServer:
    version: str
    base: Path
    downloads: Path
    state: Path
    host: str
    port: int
    transport_port: int
    heap: str

    name = "elasticsearch"

    @property
    def home(self) -> Path:
        return self.base / f"elasticsearch-{self.version}"

    scheme = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            "elasticsearch", self.state / "elasticsearch.pid", self.base / "logs" / "elasticsearch.out"
        )

    def describe(self) -> str:
        return f"Elasticsearch {self.version} at {self.url}"

    def provision(self) -> None:
        archive = self.downloads / f"elasticsearch-{self.version}.zip"
        if not archive.exists():
            run_checked(
                [
                    "mvn",
                    "-B",
                    "-q",
                    "dependency:copy",
                    f"-Dartifact=org.elasticsearch.distribution.integ-test-zip:elasticsearch:{self.version}:zip",
                    f"-DoutputDirectory={self.downloads}",
                ],
                "downloading Elasticsearch from Maven Central",
            )
        marker = self.home / ".complete"
        if not marker.exists():
            shutil.rmtree(self.home, ignore_errors=True)
            self.base.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    zf.extract(info, self.base)
                    mode = info.external_attr >> 16
                    if mode:
                        os.chmod(self.base / info.filename, mode & 0o777)
            marker.touch()
        for sub in ("data", "logs"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "config" / "elasticsearch.yml").write_text(self.elasticsearch_yml())
        self.prepare_security()
        user = self._run_as()
        if user is not None:
            _ensure_system_user(user)
            entry = pwd.getpwnam(user)
            for path in (self.base, *self.base.rglob("*")):
                # A running node creates and deletes files under data/ while we walk it.
                with contextlib.suppress(FileNotFoundError):
                    os.lchown(path, entry.pw_uid, entry.pw_gid)

    def elasticsearch_yml(self) -> str:
        return ELASTICSEARCH_YML.format(
            host=self.host,
            port=self.port,
            transport_port=self.transport_port,
            data=self.base / "data",
            logs=self.base / "logs",
        )

    def prepare_security(self) -> None:
        """Write what security needs into the node's home before it is handed to its user (none here)."""

    def after_healthy(self) -> None:
        """Set up what only a running node can make (the secure node's user and API key; none here)."""

    def java_env(self) -> dict[str, str]:
        java_home = Path(shutil.which("java") or "java").resolve().parents[1]
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base),
            "ES_JAVA_HOME": str(java_home),
            "LANG": "C.UTF-8",
        }

    def health_get(self, path: str) -> tuple[int, bytes]:
        return http_get(f"{self.url}{path}", timeout=2.0)

    def _run_as(self) -> str | None:
        return ES_USER if os.geteuid() == 0 else None

    def start(self) -> None:
        if self.process.is_running():
            return
        if tcp_open(self.host, self.port):
            raise StackError(port_owner_hint(self.host, self.port))
        env = {**self.java_env(), "ES_JAVA_OPTS": f"-Xms{self.heap} -Xmx{self.heap}"}
        self.process.start(
            [str(self.home / "bin" / "elasticsearch")], cwd=self.home, env=env, user=self._run_as()
        )

    def wait_healthy(self, timeout: float) -> None:
        wait_until_healthy(self.process, self._green_or_yellow, timeout=timeout, what="cluster health")
        self.after_healthy()

    def _green_or_yellow(self) -> bool:
        status, body = self.health_get("/_cluster/health")
        return status == 200 and orjson.loads(body).get("status") in ("green", "yellow")


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
        )
