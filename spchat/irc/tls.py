"""The IRC gateway's TLS certificate: a pair from files (a Let's Encrypt
one, say), or a self-signed one made in the data directory on first start,
its key private to the server (mode 0600) like its Noise key.

IRC clients that do not know the certificate's issuer check it by its
SHA-256 fingerprint, which the server prints at start."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_FILE = "irc-cert.pem"
KEY_FILE = "irc-key.pem"
VALID_DAYS = 3650


class CertificateError(Exception):
    """A certificate or key that cannot be used, in one line."""


def certificate_paths(data_dir: Path, cert: Path | None, key: Path | None,
                      server_name: str) -> tuple[Path, Path]:
    """The certificate and key to serve: the configured pair, checked, or
    the data directory's self-signed one (made now if there is none)."""
    if (cert is None) != (key is None):
        raise CertificateError("CHAT_IRC_CERT and CHAT_IRC_KEY go together: give both or neither")
    if cert is not None and key is not None:
        load(cert, key)
        return cert, key
    cert, key = data_dir / CERT_FILE, data_dir / KEY_FILE
    if not cert.exists() or not key.exists():
        _make_self_signed(cert, key, server_name)
    load(cert, key)
    return cert, key


def load(cert_path: Path, key_path: Path) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as e:
        raise CertificateError(f"cannot read the certificate {cert_path}: {_why(e)}") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise CertificateError(f"cannot read the private key {key_path}: {_why(e)}") from None
    if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        raise CertificateError(f"the key {key_path} is not the certificate {cert_path}'s")
    return cert


def fingerprint(cert_path: Path) -> str:
    """SHA-256 of the certificate, as IRC clients show it (AA:BB:...)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _why(error: Exception) -> str:
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


def _make_self_signed(cert_path: Path, key_path: Path, server_name: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(server_name), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        # The key is private before a byte of it is written.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also if an old file was there
        with os.fdopen(fd, "wb") as f:
            f.write(pem_key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as e:
        raise CertificateError(f"cannot write the IRC certificate in {cert_path.parent}: "
                               f"{_why(e)}") from None
