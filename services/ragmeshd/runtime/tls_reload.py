"""Server credentials that pick up renewed certificate files without a restart.

    credentials = reloading_server_credentials(cert_path, key_path, ca_path)
    server.add_secure_port(address, credentials)

gRPC asks `CertificateFiles.fetch` before every new TLS handshake (grpc's dynamic server
credentials); it answers None (keep what you have) unless a file changed since it last looked.
Connections already open keep the certificate they were made with; every new one gets the
files on disk at that time. `ragmesh certs renew` and cert-manager (through the kubelet's
atomic update of a mounted Secret) both replace the files while the server runs.

A certificate and its key are two files, replaced one after the other: until the pair on disk
matches again the last good pair stays in use, so no handshake ever sees a mismatch. A client
reading its own pair (read_matching_pair) waits for the same.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

_log = logging.getLogger("ragmesh.tls")

# (inode, modification time, size) of each file: any replacement changes at least one.
_Version = tuple[tuple[int, int, int], ...]
# How long a client waits for the two halves of a renewed pair to match again.
PAIR_WAIT_S = 2.0


class CertificateFiles:
    """A server's certificate, key and trusted CA on disk, re-read when they change."""

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        self._paths = (cert, key, ca)
        self._version: _Version | None = None
        self.serial: int | None = None  # of the certificate served to new connections

    def initial(self) -> grpc.ServerCertificateConfiguration:
        """The configuration to start with; raises if the files are missing or do not match."""
        configuration = self._load()
        if configuration is None:
            cert, key, _ = self._paths
            raise ValueError(f"{key} is not the private key of {cert}")
        return configuration

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: new files, or None to keep the current ones."""
        try:
            if self._stat() == self._version:
                return None
            configuration = self._load()
        except (OSError, ValueError) as error:
            # Half-written or briefly missing during a replacement: keep serving the last pair.
            _log.warning("certificate files not reloaded yet: %s", error)
            return None
        if configuration is not None:
            _log.info("certificate reloaded", extra={"serial": f"{self.serial:x}"})
        return configuration

    def _stat(self) -> _Version:
        stats = [os.stat(path) for path in self._paths]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _load(self) -> grpc.ServerCertificateConfiguration | None:
        version = self._stat()
        cert_path, key_path, ca_path = self._paths
        pair = load_pair(cert_path, key_path)
        if pair is None:
            return None  # the other half of the pair has not been replaced yet
        cert_pem, key_pem, cert = pair
        ca_pem = ca_path.read_bytes()
        if self._stat() != version:
            return None  # changed while being read: look again at the next handshake
        self._version = version
        self.serial = cert.serial_number
        return grpc.ssl_server_certificate_configuration(
            [(key_pem, cert_pem)], root_certificates=ca_pem
        )


def reloading_server_credentials(cert: Path, key: Path, ca: Path) -> grpc.ServerCredentials:
    """mTLS server credentials (a client certificate from `ca` required) that follow the files."""
    files = CertificateFiles(cert, key, ca)
    return grpc.dynamic_ssl_server_credentials(
        files.initial(), files.fetch, require_client_authentication=True
    )


def load_pair(cert: Path, key: Path) -> tuple[bytes, bytes, x509.Certificate] | None:
    """The certificate's and the key's PEM, with the parsed certificate, when the key is the
    certificate's; None while one of the two has been replaced and the other not yet."""
    cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    certificate = x509.load_pem_x509_certificate(cert_pem)
    private = serialization.load_pem_private_key(key_pem, password=None)
    if public_key_der(private.public_key()) != public_key_der(certificate.public_key()):
        return None
    return cert_pem, key_pem, certificate


def read_matching_pair(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """The PEM of `cert` and its `key` for a client to present, waiting up to PAIR_WAIT_S
    while a renewal has replaced one file and not yet the other (a mismatched pair cannot
    even start a handshake). Raises ValueError when they still do not match."""
    deadline = time.monotonic() + PAIR_WAIT_S
    while (pair := load_pair(cert, key)) is None:
        if time.monotonic() > deadline:
            raise ValueError(f"{key} is not the private key of {cert}")
        time.sleep(0.02)
    return pair[0], pair[1]


def public_key_der(key: object) -> bytes:
    """A public key's DER (SubjectPublicKeyInfo): equal for a certificate and its private key."""
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
