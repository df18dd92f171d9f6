"""Renewing the mesh's leaf certificates in place, while the mesh runs.

    renewed = renew_certificates(state_dir / "certs", within_days=30)

Each renewed certificate gets a new key and serial, the same names (DNS and URI SANs) and
purpose, from the same CA. Files are replaced atomically, key first: Envoy (SDS file watching)
and the Python servers (dynamic credentials) notice the change and use the new pair for new
connections, without a restart; both keep the old pair until the new one is whole. The CA
itself is not renewed here (it outlives leaves by years; see docs/operations.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from ragmeshd.pki import authority, certs
from ragmeshd.pki.certs import LEAF_VALID_DAYS, CertificateError
from ragmeshd.state import DEFAULT_SERVICES, certificate_paths

# `ragmesh certs renew` renews what expires within this many days unless told otherwise.
RENEW_WITHIN_DAYS = 30


def renew_certificates(
    certs_dir: Path,
    *,
    within_days: float = RENEW_WITHIN_DAYS,
    services: Sequence[str] = DEFAULT_SERVICES,
    valid_days: int = LEAF_VALID_DAYS,
    now: dt.datetime | None = None,
) -> list[Path]:
    """Reissue every ragmesh leaf certificate (Envoy's, the services', the default client's)
    that expires within `within_days` (`float("inf")` renews them all). Returns the paths of
    the renewed certificates."""
    paths = certificate_paths(certs_dir, services)
    now = now or dt.datetime.now(dt.UTC)
    renewed: list[Path] = []
    with authority.locked(certs_dir):
        ca = authority.load_ca(paths.ca, certs_dir / "ca-key.pem", need_key=True)
        for spec in certs.leaf_specs(paths, services):
            if not spec.identity.cert.exists():
                raise CertificateError(
                    f"{spec.identity.cert} is missing; `ragmesh up` issues missing certificates"
                )
            if _expires_within(spec.identity.cert, within_days, now):
                certs.issue_leaf(ca, spec, valid_days)
                renewed.append(spec.identity.cert)
    return renewed


def serial_of(cert_path: Path) -> int:
    """The serial number of the certificate in `cert_path`."""
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number


def _expires_within(cert_path: Path, days: float, now: dt.datetime) -> bool:
    if days == float("inf"):
        return True
    not_after = x509.load_pem_x509_certificate(cert_path.read_bytes()).not_valid_after_utc
    return not_after <= now + dt.timedelta(days=days)
