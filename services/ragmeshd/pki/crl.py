"""Revoking client certificates: the mesh CA's certificate revocation list (certs/crl.pem).

    ensure_crl(certs_dir)                 # `ragmesh up`: make or refresh it (needs the CA key)
    revoke_client(certs_dir, "bob")       # `ragmesh certs revoke bob`

Envoy reads the CRL through the CA's SDS file (ragmeshd/envoy/sds.py), which watches the
certificates folder: the CRL is replaced atomically there, so Envoy refuses a revoked
certificate on new connections within a moment, without a restart. Only Envoy's listeners
admit user certificates (replicas accept Envoy's and the services' identities only), so the
CRL is checked where it matters.

A CRL that has passed its next-update time makes every handshake fail, so it is re-signed on
every start once it has less than CRL_REFRESH_DAYS left.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ragmeshd.pki import authority, certs, pem_files
from ragmeshd.pki.certs import CertificateError
from ragmeshd.runtime.audit import audit
from ragmeshd.state import client_identity

CRL_FILE = "crl.pem"
CRL_VALID_DAYS = 365
CRL_REFRESH_DAYS = 30
REVOKED_DIR = "revoked"


def crl_path(certs_dir: Path) -> Path:
    return certs_dir / CRL_FILE


def envoy_crl(ca_path: Path) -> dict[str, Any]:
    """The `crl` entry of Envoy's validation context for the CA at `ca_path`, if it has one."""
    path = crl_path(ca_path.parent)
    return {"crl": {"filename": str(path)}} if path.exists() else {}


def ensure_crl(certs_dir: Path, *, now: dt.datetime | None = None) -> Path | None:
    """Make the CRL if missing, or re-sign it when it nears its next update. Needs the CA key;
    without it (a brought CA) an existing CRL is left as it is and None is returned when
    there is none."""
    path = crl_path(certs_dir)
    if not (certs_dir / "ca-key.pem").exists():
        return path if path.exists() else None
    now = now or dt.datetime.now(dt.UTC)
    with authority.locked(certs_dir):
        if path.exists():
            current = x509.load_pem_x509_crl(path.read_bytes())
            next_update = current.next_update_utc
            if next_update and next_update - now > dt.timedelta(days=CRL_REFRESH_DAYS):
                return path
            revoked = list(current)
        else:
            revoked = []
        _write_crl(certs_dir, revoked, now)
    return path


def revoke_client(certs_dir: Path, name: str, *, now: dt.datetime | None = None) -> int:
    """Revoke clients/<name>.pem: add its serial to the CRL and move the pair to
    clients/revoked/, so the name can be issued again. Returns the serial."""
    certs.validate_name(name)
    identity = client_identity(certs_dir, name)
    if not identity.cert.exists():
        raise CertificateError(f"no client certificate {identity.cert} to revoke")
    now = now or dt.datetime.now(dt.UTC)
    with authority.locked(certs_dir):
        serial = x509.load_pem_x509_certificate(identity.cert.read_bytes()).serial_number
        path = crl_path(certs_dir)
        revoked = list(x509.load_pem_x509_crl(path.read_bytes())) if path.exists() else []
        if all(entry.serial_number != serial for entry in revoked):
            revoked.append(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        _write_crl(certs_dir, revoked, now)
        archive = identity.cert.parent / REVOKED_DIR
        archive.mkdir(mode=0o700, exist_ok=True)
        for file in (identity.cert, identity.key):
            if file.exists():
                file.replace(archive / f"{file.stem}-{serial:x}{file.suffix}")
    audit("certificate revoked", client=name, serial=f"{serial:x}")
    return serial


def _write_crl(certs_dir: Path, revoked: list[x509.RevokedCertificate], now: dt.datetime) -> None:
    ca = authority.load_ca(certs_dir / "ca.pem", certs_dir / "ca-key.pem", need_key=True)
    assert ca.key is not None
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - authority.BACKDATE)
        .next_update(min(now + dt.timedelta(days=CRL_VALID_DAYS), ca.cert.not_valid_after_utc))
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca.key, hashes.SHA256())
    # Moved into the watched folder in one step: Envoy never reads half a file.
    pem_files.write_atomic(crl_path(certs_dir), crl.public_bytes(serialization.Encoding.PEM), 0o600)
