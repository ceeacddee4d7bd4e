"""Elasticsearch (the same 8.x node) with its own security on: TLS on HTTP, users, an API key.

The `elastic` superuser's password is set through the keystore's `bootstrap.password` before the
first start; once the node is healthy the `tether` user is (re)created through the security API
and an API key made for it, unless the stored one still authenticates.
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

API_KEY_NAME = "tether-secure-stack"

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
"""


@dataclass(frozen=True)
class SecureElasticsearchServer(ElasticsearchServer):
    certificates: StackCertificates
    credentials_file: Path  # credentials.json; read fresh each time, since the API key comes later
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
        marker = self.home / "config" / ".bootstrap-password-set"
        if marker.exists():
            return
        tool = str(self.home / "bin" / "elasticsearch-keystore")
        (self.home / "config" / "elasticsearch.keystore").unlink(missing_ok=True)
        self._keystore([tool, "create"], None)
        # -x reads the value from stdin: the password never appears on a command line.
        self._keystore([tool, "add", "-x", "bootstrap.password"], self.credentials.elastic_password)
        marker.touch()

    def _keystore(self, argv: list[str], stdin: str | None) -> None:
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
            raise StackError(f"elasticsearch-keystore {argv[1]} failed:\n{tail}")

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
        superuser = basic_authorization(ELASTICSEARCH_SUPERUSER, c.elastic_password)
        # The first security request creates the .security index: a moment of 503 is normal then.
        deadline = time.monotonic() + 60
        while True:
            status, body = self.request(
                "PUT",
                f"/_security/user/{c.elasticsearch_username}",
                superuser,
                {"password": c.elasticsearch_password, "roles": list(self.user_roles)},
            )
            if status < 500 or time.monotonic() > deadline:
                break
            time.sleep(1)
        if status != 200:
            reason = body.decode(errors="replace")[:300]  # Elasticsearch's reason, never a password
            user = c.elasticsearch_username
            raise StackError(f"creating Elasticsearch user {user!r}: HTTP {status}: {reason}")
        if c.api_key_encoded is not None:
            status, _ = self.request("GET", "/_security/_authenticate", f"ApiKey {c.api_key_encoded}")
            if status == 200:
                return
        user = basic_authorization(c.elasticsearch_username, c.elasticsearch_password)
        status, body = self.request("POST", "/_security/api_key", user, {"name": API_KEY_NAME})
        if status != 200:
            raise StackError(f"creating an Elasticsearch API key: HTTP {status}")
        created = orjson.loads(body)
        c.with_api_key(created["id"], created["api_key"])


def basic_authorization(username: str, password: str) -> str:
    """The `Authorization` header value of HTTP basic authentication."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
