"""Elasticsearch (the same 8.x node) with its own security on: TLS on HTTP, users, an API key.

Written into the node's config directory before its first start, with the distribution's own
tools: the `elastic` superuser's password as the keystore's `bootstrap.password`, the `tether` user
in the file realm (`config/users`, `config/users_roles`, bcrypt hashed by `elasticsearch-users`) and
a service account token (`config/service_tokens`, by `elasticsearch-service-tokens`).

The native realm (users and roles made through the API) and API keys live in the `.security`
index, whose settings need analysis components the integ-test-zip distribution lacks; a small
plugin built at set-up supplies them (secure_elasticsearch_plugin.py, docs/secure-stack.md). Once
the node is healthy an API key is made for `tether`, unless the stored one still authenticates.
"""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tether.stack.certificate_paths import StackCertificates
from tether.stack.credentials import ELASTICSEARCH_SUPERUSER, StackCredentials
from tether.stack.elasticsearch import ElasticsearchServer
from tether.stack.health import StackError
from tether.stack.secure_elasticsearch_plugin import install_security_index_analysis

SERVICE_ACCOUNT = "elastic/fleet-server"  # built in; may monitor the cluster and write logs-*, metrics-*
SERVICE_TOKEN_NAME = "tether"
API_KEY_NAME = "tether-secure-stack"
SECURITY_MARKER = ".tether-security-set-up"  # holds the user's roles: other roles redo the set-up

SECURITY_YML = """\
xpack.security.enabled: true
xpack.security.enrollment.enabled: false
xpack.security.http.ssl.enabled: true
xpack.security.http.ssl.key: certs/server.key
xpack.security.http.ssl.certificate: certs/server.crt
xpack.security.http.ssl.certificate_authorities: [certs/ca.crt]
# A client certificate is not required, but one that is presented must verify (expired: refused).
xpack.security.http.ssl.client_authentication: optional
xpack.security.transport.ssl.enabled: true
xpack.security.transport.ssl.key: certs/server.key
xpack.security.transport.ssl.certificate: certs/server.crt
xpack.security.transport.ssl.certificate_authorities: [certs/ca.crt]
xpack.security.transport.ssl.verification_mode: certificate
# The stack's own users are files, read at start; users made through the API are native ones.
xpack.security.authc.realms.file.file1.order: 0
xpack.security.authc.realms.native.native1.order: 1
"""


@dataclass(frozen=True)
class SecureElasticsearchServer(ElasticsearchServer):
    certificates: StackCertificates
    credentials_file: Path  # credentials.json; read fresh each time, since the service token comes later
    user_roles: tuple[str, ...]

    scheme = "https"

    @property
    def credentials(self) -> StackCredentials:
        return StackCredentials.load(self.credentials_file)

    def describe(self) -> str:
        return f"Elasticsearch {self.version} at {self.url} (TLS, users, API key)"

    def elasticsearch_yml(self) -> str:
        return super().elasticsearch_yml().replace("xpack.security.enabled: false\n", "") + SECURITY_YML

    def prepare_security(self) -> None:
        # Elasticsearch reads TLS files only from inside its config directory.
        certs = self.home / "config" / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        for source, name in (
            (self.certificates.ca.cert, "ca.crt"),
            (self.certificates.server.cert, "server.crt"),
            (self.certificates.server.key, "server.key"),
        ):
            shutil.copyfile(source, certs / name)
            (certs / name).chmod(0o600)
        install_security_index_analysis(
            self.home, self.version, self.state / "security-index-analysis-build", self.java_env()
        )
        marker = self.home / "config" / SECURITY_MARKER
        wanted = ",".join(self.user_roles)
        if marker.exists() and marker.read_text() == wanted:
            return
        config = self.home / "config"
        (config / "elasticsearch.keystore").unlink(missing_ok=True)
        for name in ("users", "users_roles", "service_tokens"):
            (config / name).write_text("")  # the tools add to these files and refuse a missing one
        c = self.credentials
        keystore = str(self.home / "bin" / "elasticsearch-keystore")
        self._tool([keystore, "create"], None)
        # -x reads the value from stdin: the password never appears on a command line.
        self._tool([keystore, "add", "-x", "bootstrap.password"], _Hidden(c.elastic_password))
        # Without -p the tool asks for the password twice, on stdin when there is no console.
        users = str(self.home / "bin" / "elasticsearch-users")
        password = _Hidden(f"{c.elasticsearch_password}\n{c.elasticsearch_password}\n")
        self._tool([users, "useradd", c.elasticsearch_username, "-r", wanted], password)
        tokens = str(self.home / "bin" / "elasticsearch-service-tokens")
        printed = self._tool([tokens, "create", SERVICE_ACCOUNT, SERVICE_TOKEN_NAME], None)
        c.with_service_token(*_service_token(printed))
        marker.write_text(wanted)

    def _tool(self, argv: list[str], stdin: str | None) -> str:
        """Runs one of the distribution's CLI tools in its home; its stdout."""
        result = subprocess.run(
            argv,
            input=stdin,
            env=self.java_env(),
            capture_output=True,
            text=True,
            check=False,
            cwd=self.home,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise StackError(f"{Path(argv[0]).name} {argv[1]} failed:\n{tail}")
        return result.stdout

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certificates.ca.cert))

    def request(
        self, method: str, path: str, authorization: str, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        data = orjson.dumps(body) if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": authorization, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10.0, context=self.ssl_context()) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read()

    def health_get(self, path: str) -> tuple[int, bytes]:
        return self.request(
            "GET", path, basic_authorization(ELASTICSEARCH_SUPERUSER, self.credentials.elastic_password)
        )

    def after_healthy(self) -> None:
        c = self.credentials
        # The file realm is read at start: a user it refuses now would be refused to every test.
        user = basic_authorization(c.elasticsearch_username, c.elasticsearch_password)
        status, body = self.request("GET", "/_security/_authenticate", user)
        if status != 200:
            raise StackError(
                f"Elasticsearch user {c.elasticsearch_username!r} does not authenticate: {_reason(body)}"
            )
        if c.api_key_encoded is not None:
            status, _ = self.request("GET", "/_security/_authenticate", f"ApiKey {c.api_key_encoded}")
            if status == 200:
                return
        # The first API key creates the .security index: a moment of 503 is normal then.
        deadline = time.monotonic() + 60
        while True:
            status, body = self.request("POST", "/_security/api_key", user, {"name": API_KEY_NAME})
            if status < 500 or time.monotonic() > deadline:
                break
            time.sleep(1)
        if status != 200:
            raise StackError(f"creating an Elasticsearch API key: HTTP {status}: {_reason(body)}")
        created = orjson.loads(body)
        c.with_api_key(created["id"], created["api_key"])


def _reason(body: bytes) -> str:
    """Elasticsearch's reason for a refusal (it never echoes a password)."""
    return body.decode(errors="replace")[:300]


class _Hidden(str):
    """A secret handed to a tool's stdin: tracebacks that show arguments show no password."""

    def __repr__(self) -> str:
        return "'<hidden>'"


def _service_token(printed: str) -> tuple[str, str]:
    """(name, value) from `elasticsearch-service-tokens create`'s `SERVICE_TOKEN <name> = <value>`."""
    for line in printed.splitlines():
        words = line.split()
        if len(words) == 4 and words[0] == "SERVICE_TOKEN" and words[2] == "=":
            return words[1], words[3]
    raise StackError("elasticsearch-service-tokens printed no SERVICE_TOKEN line")


def basic_authorization(username: str, password: str) -> str:
    """The `Authorization` header value of HTTP basic authentication."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
