"""Where the secure stack's certificates are: known before they exist, with no crypto library needed.

`tether.stack.certificates` makes them (with `cryptography`, imported only when set-up runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Names every local server certificate carries: clients connect by either.
LOCAL_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1")
WRONG_HOSTNAME = "wrong-host.tether.invalid"


@dataclass(frozen=True)
class CertificatePaths:
    """A PEM certificate, its unencrypted PKCS#8 key, and both concatenated (Kafka's PEM keystore)."""

    cert: Path
    key: Path
    bundle: Path


@dataclass(frozen=True)
class StackCertificates:
    """Where set-up wrote each file. `ca` signs everything the servers present and trust."""

    directory: Path
    ca: CertificatePaths
    server: CertificatePaths  # SANs: localhost, 127.0.0.1; serverAuth and clientAuth
    client: CertificatePaths  # a valid client certificate (mutual TLS) signed by `ca`
    untrusted_ca: CertificatePaths  # a second CA no server trusts
    untrusted_server: CertificatePaths  # right names, signed by `untrusted_ca`
    wrong_hostname: CertificatePaths  # signed by `ca`, only for WRONG_HOSTNAME
    expired_client: CertificatePaths  # signed by `ca`, expired yesterday

    @classmethod
    def at(cls, directory: Path) -> StackCertificates:
        def paths(stem: str) -> CertificatePaths:
            return CertificatePaths(
                directory / f"{stem}.crt", directory / f"{stem}.key", directory / f"{stem}.pem"
            )

        return cls(
            directory=directory,
            ca=paths("ca"),
            server=paths("server"),
            client=paths("client"),
            untrusted_ca=paths("untrusted-ca"),
            untrusted_server=paths("untrusted-server"),
            wrong_hostname=paths("wrong-hostname"),
            expired_client=paths("expired-client"),
        )

    def all(self) -> tuple[CertificatePaths, ...]:
        return (
            self.ca,
            self.server,
            self.client,
            self.untrusted_ca,
            self.untrusted_server,
            self.wrong_hostname,
            self.expired_client,
        )

    def complete(self) -> bool:
        return all(p.cert.exists() and p.key.exists() and p.bundle.exists() for p in self.all())
