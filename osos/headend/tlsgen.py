"""A private certificate authority for the broker's TLS listener (HES-52, HES-53, HES-55).

``osos demo`` and the tests need TLS without a public CA: this module makes a CA, a server certificate for the
broker (loopback names by default) and, optionally, client certificates, with the ``cryptography`` package. Keys
are written 0600 and existing files are reused, so a restarted demo keeps its trust anchor and devices that already
trust the CA keep working. A production deployment uses its own PKI; nothing here is needed there.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825  # the longest lifetime common TLS clients accept for a leaf certificate


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (created 0600, never world-readable for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key


def make_ca(ca_cert: Path, ca_key: Path, common_name: str = "OSOS private CA") -> None:
    """A self-signed CA (EC P-256), unless both files already exist."""
    if ca_cert.exists() and ca_key.exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(ca_key, _key_pem(key))
    ca_cert.parent.mkdir(parents=True, exist_ok=True)
    ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def issue(ca_cert: Path, ca_key: Path, cert_path: Path, key_path: Path, common_name: str, *,
          server: bool, hosts: tuple[str, ...] = ()) -> None:
    """Sign a leaf certificate for a server (with ``hosts`` as subject alternative names) or a client."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = _load_key(ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                              else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    if server:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_server_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")) -> TlsFiles:
    """CA + broker certificate in ``directory``, made once and reused (the CA is what clients pin)."""
    files = TlsFiles(directory / "ca.crt", directory / "ca.key", directory / "server.crt", directory / "server.key")
    make_ca(files.ca_cert, files.ca_key)
    if not (files.server_cert.exists() and files.server_key.exists()):
        issue(files.ca_cert, files.ca_key, files.server_cert, files.server_key, "osos-broker", server=True,
              hosts=hosts)
    return files


def issue_client(files: TlsFiles, name: str, directory: Path) -> tuple[Path, Path]:
    """A client certificate (optional second factor for a head-end or gateway); returns (cert, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    if not (cert.exists() and key.exists()):
        issue(files.ca_cert, files.ca_key, cert, key, name, server=False)
    return cert, key
