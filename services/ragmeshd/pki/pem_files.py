"""Reading and writing PEM certificates and keys: atomic writes, private modes, clear errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


class CertificateError(Exception):
    """A certificate is missing, expiring, untrusted or unsafe; the message says what to do."""


# The names certificates carry live one layer down, where the runtime checks them too.


def write_key(
    path: Path, key: ec.EllipticCurvePrivateKey, *, passphrase: bytes | None = None
) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption,
    )
    write_atomic(path, data, 0o600)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    # Owner-only like everything in the state folder: only ragmesh and Envoy read them.
    write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o600)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode (never briefly world-readable), then renamed into place.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def check_key_mode(path: Path) -> None:
    # As ssh does: a private key others can read is refused rather than used.
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CertificateError(
            f"{path} has mode {mode:04o}; private keys must be readable by their owner only:"
            f" chmod 600 {path}"
        )


def read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise CertificateError(f"{path} is missing") from None
    except ValueError as error:
        raise CertificateError(f"{path} is not a PEM certificate: {error}") from None
