"""The secure stack's own certificate authority, made locally with `cryptography` at set-up.

Nothing is downloaded or committed. Beside the CA and the servers' certificate, set-up also makes
what negative tests need: a second CA nobody trusts (with a server certificate of its own), a server
certificate for a name that is not ours, and a client certificate that has already expired.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether.stack.certificate_paths import LOCAL_NAMES, WRONG_HOSTNAME, CertificatePaths, StackCertificates

VALID_DAYS = 825  # the longest lifetime Apple's TLS clients accept for a server certificate
RSA_KEY_BITS = 2048  # RSA rather than EC: every server here (Java, Go) and client reads it


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey


def ensure_certificates(directory: Path, now: datetime.datetime | None = None) -> StackCertificates:
    """Make the whole set once; an existing complete set is kept, so servers and clients stay in step."""
    certificates = StackCertificates.at(directory)
    if certificates.complete():
        return certificates
    return make_certificates(directory, now=now)


def make_certificates(directory: Path, now: datetime.datetime | None = None) -> StackCertificates:
    """Make a fresh CA, server and client certificates and the negative-test ones under `directory`."""
    now = now or datetime.datetime.now(datetime.UTC)
    directory.mkdir(parents=True, exist_ok=True)
    certificates = StackCertificates.at(directory)
    ca = _authority("tether local stack CA", now)
    untrusted_ca = _authority("tether untrusted CA", now)
    local = [_san(name) for name in LOCAL_NAMES]
    issued = {
        certificates.ca: ca,
        certificates.server: _leaf(ca, "tether local server", local, now, server=True, client=True),
        certificates.client: _leaf(ca, "tether-client", [], now, server=False, client=True),
        certificates.untrusted_ca: untrusted_ca,
        certificates.untrusted_server: _leaf(
            untrusted_ca, "tether untrusted server", local, now, server=True, client=False
        ),
        certificates.wrong_hostname: _leaf(
            ca, WRONG_HOSTNAME, [_san(WRONG_HOSTNAME)], now, server=True, client=False
        ),
        certificates.expired_client: _leaf(
            ca,
            "tether-expired-client",
            [],
            now - datetime.timedelta(days=30),
            server=False,
            client=True,
            days=29,
        ),
    }
    for paths, item in issued.items():
        _write(paths, item)
    return certificates


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tether local stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _authority(common_name: str, now: datetime.datetime) -> _Issued:
    key = _new_key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issued(cert, key)


def _leaf(
    issuer: _Issued,
    common_name: str,
    names: list[x509.GeneralName],
    not_before: datetime.datetime,
    *,
    server: bool,
    client: bool,
    days: int = VALID_DAYS,
) -> _Issued:
    key = _new_key()
    usages = [
        u
        for u, wanted in (
            (ExtendedKeyUsageOID.SERVER_AUTH, server),
            (ExtendedKeyUsageOID.CLIENT_AUTH, client),
        )
        if wanted
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before - datetime.timedelta(minutes=5))
        .not_valid_after(not_before + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def _write(paths: CertificatePaths, issued: _Issued) -> None:
    cert_pem = issued.cert.public_bytes(serialization.Encoding.PEM)
    # PKCS#8, unencrypted: the form Kafka's PEM keystore, Elasticsearch and Go all read.
    key_pem = issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(paths.key, key_pem)
    paths.cert.write_bytes(cert_pem)
    _write_private(paths.bundle, key_pem + cert_pem)


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
