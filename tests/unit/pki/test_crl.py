"""The mesh CA's revocation list: made, refreshed, and extended by `revoke_client`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from ragmeshd.pki.certs import CertificateError, ensure_certificates, issue_client_certificate
from ragmeshd.pki.crl import (
    CRL_VALID_DAYS,
    crl_path,
    ensure_crl,
    envoy_crl,
    revoke_client,
)


def revoked_serials(certs_dir: Path) -> set[int]:
    """The serials the CRL lists, as Envoy reads them."""
    crl = x509.load_pem_x509_crl(crl_path(certs_dir).read_bytes())
    return {entry.serial_number for entry in crl}


def test_revoking_adds_the_serial_and_frees_the_name(tmp_path: Path) -> None:
    certs_dir = tmp_path / "certs"
    paths = ensure_certificates(certs_dir)
    assert envoy_crl(paths.ca) == {}
    assert ensure_crl(certs_dir) == crl_path(certs_dir)
    assert envoy_crl(paths.ca) == {"crl": {"filename": str(crl_path(certs_dir))}}
    assert revoked_serials(certs_dir) == set()

    cert, _ = issue_client_certificate(certs_dir, "bob")
    serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    assert revoke_client(certs_dir, "bob") == serial
    assert revoked_serials(certs_dir) == {serial}
    assert not cert.exists() and (cert.parent / "revoked" / f"bob-{serial:x}.pem").exists()
    crl = x509.load_pem_x509_crl(crl_path(certs_dir).read_bytes())
    ca = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl_path(certs_dir).stat().st_mode & 0o777 == 0o600

    issue_client_certificate(certs_dir, "bob")  # the name is free again
    with pytest.raises(CertificateError):
        revoke_client(certs_dir, "nobody")


def test_a_crl_near_its_next_update_is_resigned_with_its_entries(tmp_path: Path) -> None:
    certs_dir = tmp_path / "certs"
    ensure_certificates(certs_dir)
    issue_client_certificate(certs_dir, "eve")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=CRL_VALID_DAYS - 1)
    serial = revoke_client(certs_dir, "eve", now=long_ago)
    ensure_crl(certs_dir)
    crl = x509.load_pem_x509_crl(crl_path(certs_dir).read_bytes())
    assert crl.next_update_utc is not None
    assert crl.next_update_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    assert revoked_serials(certs_dir) == {serial}
