"""The secure stack's certificates, checked by real TLS handshakes (OpenSSL through `ssl`).

Each handshake runs in memory between a server context holding one of the made certificates and a
client context trusting one of the made CAs, so what is verified is what a TLS client would verify.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest

pytest.importorskip("cryptography", reason="cryptography is a dependency: pip install -e .")

from cryptography import x509

from tether.stack.certificate_paths import (
    LOCAL_NAMES,
    WRONG_HOSTNAME,
    CertificatePaths,
    StackCertificates,
)
from tether.stack.certificates import ensure_certificates, make_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> StackCertificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def handshake(
    server: CertificatePaths,
    trusted_ca: Path,
    hostname: str,
    *,
    client_certificate: CertificatePaths | None = None,
    require_client_certificate_from: Path | None = None,
) -> None:
    """One TLS handshake over memory buffers; raises ssl.SSLError when either side refuses."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(server.cert, server.key)
    if require_client_certificate_from is not None:
        server_context.verify_mode = ssl.CERT_REQUIRED
        server_context.load_verify_locations(require_client_certificate_from)
    client_context = ssl.create_default_context(cafile=str(trusted_ca))
    if client_certificate is not None:
        client_context.load_cert_chain(client_certificate.cert, client_certificate.key)

    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname=hostname)
    server_in, server_out = to_server, to_client
    server_side = server_context.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        if all(done.values()):
            # TLS 1.3 servers check the client certificate after the client thinks it is done:
            # exchange one record so a refusal surfaces.
            client.write(b"ping")
            assert server_side.read(4) == b"ping"
            return
    raise AssertionError("handshake did not finish")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.mark.parametrize("hostname", LOCAL_NAMES)
def test_server_certificate_verifies_against_the_ca_by_each_local_name(
    certificates: StackCertificates, hostname: str
) -> None:
    handshake(certificates.server, certificates.ca.cert, hostname)


def test_server_certificate_names_are_exactly_the_local_ones(certificates: StackCertificates) -> None:
    names = load(certificates.server.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_bundle_is_the_key_then_the_certificate(certificates: StackCertificates) -> None:
    # Kafka's PEM keystore reads the key and the chain from one file.
    bundle = certificates.server.bundle.read_bytes()
    assert bundle == certificates.server.key.read_bytes() + certificates.server.cert.read_bytes()
    assert bundle.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted


def test_keys_are_readable_by_their_owner_only(certificates: StackCertificates) -> None:
    for paths in certificates.all():
        assert paths.key.stat().st_mode & 0o077 == 0, paths.key
        assert paths.bundle.stat().st_mode & 0o077 == 0, paths.bundle


def test_untrusted_ca_does_not_verify_the_servers(certificates: StackCertificates) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(certificates.server, certificates.untrusted_ca.cert, "127.0.0.1")


def test_certificate_of_the_untrusted_ca_is_refused_by_clients_of_the_stack(
    certificates: StackCertificates,
) -> None:
    handshake(certificates.untrusted_server, certificates.untrusted_ca.cert, "127.0.0.1")  # sound itself
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(certificates.untrusted_server, certificates.ca.cert, "127.0.0.1")


@pytest.mark.parametrize("hostname", LOCAL_NAMES)
def test_wrong_hostname_certificate_fails_hostname_verification(
    certificates: StackCertificates, hostname: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(certificates.wrong_hostname, certificates.ca.cert, hostname)
    handshake(certificates.wrong_hostname, certificates.ca.cert, WRONG_HOSTNAME)  # the chain is good


def test_valid_client_certificate_is_accepted(certificates: StackCertificates) -> None:
    handshake(
        certificates.server,
        certificates.ca.cert,
        "127.0.0.1",
        client_certificate=certificates.client,
        require_client_certificate_from=certificates.ca.cert,
    )


def test_expired_client_certificate_is_expired_and_refused(certificates: StackCertificates) -> None:
    expired = load(certificates.expired_client.cert)
    now = datetime.datetime.now(datetime.UTC)
    assert expired.not_valid_after_utc < now
    assert expired.not_valid_before_utc < expired.not_valid_after_utc
    with pytest.raises(ssl.SSLError):
        handshake(
            certificates.server,
            certificates.ca.cert,
            "127.0.0.1",
            client_certificate=certificates.expired_client,
            require_client_certificate_from=certificates.ca.cert,
        )


def test_every_certificate_except_the_expired_one_is_valid_now(certificates: StackCertificates) -> None:
    now = datetime.datetime.now(datetime.UTC)
    for paths in certificates.all():
        cert = load(paths.cert)
        valid = cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
        assert valid == (paths != certificates.expired_client), paths.cert


def test_existing_set_is_kept_and_an_incomplete_one_remade(tmp_path: Path) -> None:
    first = make_certificates(tmp_path)
    ca_pem = first.ca.cert.read_bytes()
    assert ensure_certificates(tmp_path).ca.cert.read_bytes() == ca_pem
    first.expired_client.key.unlink()
    remade = ensure_certificates(tmp_path)
    assert remade.complete()
    assert remade.ca.cert.read_bytes() != ca_pem
