"""Renewing leaf certificates in place (ragmeshd/pki/renewal.py) and servers following
renewed files (ragmeshd/runtime/tls_reload.py)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from ragmeshd.pki.certs import CertificatePaths, ensure_certificates
from ragmeshd.pki.renewal import renew_certificates, serial_of
from ragmeshd.runtime.tls_reload import CertificateFiles, read_matching_pair


def _sans(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(str(name.value) for name in names)


def test_renew_all_gives_new_serials_same_names_same_ca(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path / "certs")
    before = {i.cert: (serial_of(i.cert), _sans(i.cert)) for i in paths.all()}
    ca_serial = serial_of(paths.ca)

    renewed = renew_certificates(tmp_path / "certs", within_days=float("inf"))

    assert set(renewed) == set(before)
    for cert, (serial, sans) in before.items():
        assert serial_of(cert) != serial
        assert _sans(cert) == sans
    assert serial_of(paths.ca) == ca_serial
    # Everything still checks out: signed by the CA, keys match, modes kept.
    ensure_certificates(tmp_path / "certs")


def test_renew_takes_only_what_expires_soon(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path / "certs")
    serials = {i.cert: serial_of(i.cert) for i in paths.all()}
    assert renew_certificates(tmp_path / "certs", within_days=30) == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    renewed = renew_certificates(tmp_path / "certs", within_days=30, now=later)
    assert set(renewed) == set(serials)


def _pair(paths: CertificatePaths) -> tuple[Path, Path, Path]:
    identity = paths.services["search"]
    return identity.cert, identity.key, paths.ca


def test_reloading_credentials_follow_a_renewal_and_skip_a_half_written_pair(
    tmp_path: Path,
) -> None:
    paths = ensure_certificates(tmp_path / "certs")
    cert, key, ca = _pair(paths)
    files = CertificateFiles(cert, key, ca)
    files.initial()
    first = files.serial
    assert files.fetch() is None  # nothing changed

    old_key = tmp_path / "old-key.pem"
    shutil.copy(key, old_key)
    renew_certificates(tmp_path / "certs", within_days=float("inf"))
    # The new certificate beside the old key: a renewal caught halfway. Keep the old pair.
    shutil.copy(old_key, key)
    assert files.fetch() is None
    assert files.serial == first

    renew_certificates(tmp_path / "certs", within_days=float("inf"))
    assert files.fetch() is not None
    assert files.serial == serial_of(cert) != first


def test_a_client_reads_its_pair_only_when_the_key_is_the_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal replaces certificate and key one after the other; a client must never
    present the new certificate with the old key (gRPC cannot start a handshake with it)."""
    paths = ensure_certificates(tmp_path / "certs")
    old_key = paths.client.key.read_bytes()
    assert read_matching_pair(paths.client.cert, paths.client.key) == (
        paths.client.cert.read_bytes(),
        old_key,
    )
    renew_certificates(tmp_path / "certs", within_days=float("inf"))
    paths.client.key.write_bytes(old_key)  # the new certificate, the key not yet replaced
    monkeypatch.setattr("ragmeshd.runtime.tls_reload.PAIR_WAIT_S", 0.1)
    with pytest.raises(ValueError, match="is not the private key of"):
        read_matching_pair(paths.client.cert, paths.client.key)
