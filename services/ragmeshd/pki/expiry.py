"""Checking the mesh's certificates at start: each exists, is signed by the CA, matches its
key and does not expire within the margin, with advice on how to renew."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from ragmeshd.pki.authority import (
    BACKDATE,
)
from ragmeshd.pki.pem_files import (
    CertificateError,
    check_key_mode,
    read_cert,
)
from ragmeshd.runtime.tls_reload import public_key_der

# The names certificates carry live one layer down, where the runtime checks them too.
from ragmeshd.state import (
    CLIENTS_DIR,
    CertificatePaths,
)

# A start-up refuses certificates that expire sooner than this.
EXPIRY_MARGIN_DAYS = 14


def check_expiry(
    cert_path: Path,
    *,
    margin_days: int = EXPIRY_MARGIN_DAYS,
    now: dt.datetime | None = None,
) -> dt.datetime:
    """Return when the certificate expires; raise CertificateError if within `margin_days`."""
    cert = read_cert(cert_path)
    now = now or dt.datetime.now(dt.UTC)
    not_after = cert.not_valid_after_utc
    if cert.not_valid_before_utc > now + BACKDATE:
        raise CertificateError(
            f"{cert_path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC;"
            " check this machine's clock"
        )
    if not_after <= now + dt.timedelta(days=margin_days):
        state = "expired on" if not_after <= now else "expires on"
        raise CertificateError(
            f"{cert_path} {state} {not_after:%Y-%m-%d} (ragmesh needs at least {margin_days}"
            f" days left). {_renew_advice(cert_path)}"
        )
    return not_after


def check_all(paths: CertificatePaths, margin_days: int) -> None:
    ca_cert = read_cert(paths.ca)
    check_expiry(paths.ca, margin_days=margin_days)
    for identity in paths.all():
        for path in (identity.cert, identity.key):
            if not path.exists():
                raise CertificateError(
                    f"{path} is missing; restore it, or delete {identity.cert} and"
                    f" {identity.key} and rerun to issue a new pair"
                )
        cert = read_cert(identity.cert)
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateError(
                f"{identity.cert} is not signed by {paths.ca}. {_renew_advice(identity.cert)}"
            ) from None
        check_expiry(identity.cert, margin_days=margin_days)
        check_key_mode(identity.key)
        key = serialization.load_pem_private_key(identity.key.read_bytes(), password=None)
        if public_key_der(key.public_key()) != public_key_der(cert.public_key()):
            raise CertificateError(
                f"{identity.key} is not the key of {identity.cert}. {_renew_advice(identity.cert)}"
            )


def _renew_advice(cert_path: Path) -> str:
    folder = cert_path.parent if cert_path.parent.name != CLIENTS_DIR else cert_path.parent.parent
    if cert_path.name == "ca.pem":
        return (
            f"Delete {folder} and rerun to create a new CA and certificates (clients must then"
            " use the new ca.pem), or bring your own CA (see docs/operations.md)"
        )
    key = cert_path.with_name(cert_path.name.removesuffix(".pem") + "-key.pem")
    return (
        f"Delete {cert_path} and {key} and rerun to issue a new one from the ragmesh CA, or if"
        " you brought your own CA, reissue it from that CA (see docs/operations.md)"
    )
