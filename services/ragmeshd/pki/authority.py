"""The mesh's certificate authority: its certificate and key, loaded or created under a lock
that serialises issuance, and where the CA key's passphrase comes from (set only by `ragmesh up`
and `ragmesh certs`; servers never hold the CA key)."""

from __future__ import annotations

import datetime as dt
import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

# The names certificates carry live one layer down, where the runtime checks them too.
from ragmeshd.pki.pem_files import (
    CertificateError,
    check_key_mode,
    read_cert,
    write_cert,
    write_key,
)
from ragmeshd.state import (
    CertificatePaths,
)

CA_VALID_DAYS = 3650


# Backdating absorbs small clock differences between the processes that check certificates.
BACKDATE = dt.timedelta(minutes=5)


# "openai" is the OpenAI-compatible HTTP adapter (ragmeshd/openai_compat).
ORGANIZATION = "ragmesh"


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | None


@contextmanager
def locked(certs_dir: Path) -> Iterator[None]:
    """Serialise issuance so two processes starting together do not write different CAs."""
    if not certs_dir.is_dir():
        raise CertificateError(
            f"{certs_dir} does not exist; run `ragmesh up` once to create the ragmesh CA"
        )
    with (certs_dir / ".lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def load_or_create_ca(certs_dir: Path, paths: CertificatePaths) -> CertificateAuthority:
    ca_key_path = certs_dir / "ca-key.pem"
    if paths.ca.exists():
        # The key is only needed when something is missing (a brought CA may ship without it).
        leaves_missing = any(not i.cert.exists() and not i.key.exists() for i in paths.all())
        return load_ca(paths.ca, ca_key_path, need_key=leaves_missing)
    existing = [i.cert for i in paths.all() if i.cert.exists()]
    if existing or ca_key_path.exists():
        raise CertificateError(
            f"{paths.ca} is missing but {existing[0] if existing else ca_key_path} exists:"
            f" certificates without their CA cannot be trusted. Delete {certs_dir} and rerun to"
            " create a new CA, or restore ca.pem (see docs/operations.md, bringing your own CA)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "ragmesh local CA"),
        ]
    )
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
        # path_length=0: this CA signs leaves only, never another CA.
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_key(ca_key_path, key, passphrase=ca_passphrase_source())
    write_cert(paths.ca, cert)
    return CertificateAuthority(cert, key)


def load_ca(cert_path: Path, key_path: Path, *, need_key: bool) -> CertificateAuthority:
    if not cert_path.exists():
        raise CertificateError(
            f"{cert_path} does not exist; run `ragmesh up` once to create the ragmesh CA"
        )
    cert = read_cert(cert_path)
    if not need_key:
        return CertificateAuthority(cert, None)
    if not key_path.exists():
        raise CertificateError(
            f"{key_path} is missing, so no new certificate can be issued from {cert_path}."
            " With your own CA, issue the missing certificates yourself (docs/operations.md)"
        )
    check_key_mode(key_path)
    key = load_ca_key(key_path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{key_path}: ragmesh issues certificates with EC keys only")
    return CertificateAuthority(cert, key)


# --- the CA key's passphrase (issue 10) ---------------------------------------------------
# The CA key is encrypted at rest when a passphrase source is set: `ragmesh up` and `ragmesh
# certs` set one from the settings (ragmeshd/pki/passphrase.py); servers never do, so they
# cannot use the CA key (and never need it: `up` issues every certificate first).
def no_passphrase() -> bytes | None:
    return None


_passphrase_source: dict[str, Callable[[], bytes | None]] = {"source": no_passphrase}


def use_ca_passphrase(source: Callable[[], bytes | None]) -> None:
    """Encrypt a new CA key with, and decrypt the CA key with, what `source` returns."""
    _passphrase_source["source"] = source


def ca_passphrase_source() -> bytes | None:
    return _passphrase_source["source"]()


def ca_key_is_encrypted(key_path: Path) -> bool:
    return b"ENCRYPTED" in key_path.read_bytes()[:64]


def load_ca_key(key_path: Path) -> PrivateKeyTypes:
    if not ca_key_is_encrypted(key_path):
        return serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    passphrase = ca_passphrase_source()
    if not passphrase:
        raise CertificateError(
            f"{key_path} is encrypted and this process has no passphrase for it: only"
            " `ragmesh up` and `ragmesh certs` use the CA key (see docs/security.md)"
        )
    try:
        return serialization.load_pem_private_key(key_path.read_bytes(), password=passphrase)
    except ValueError:
        raise CertificateError(
            f"{key_path}: the CA key's passphrase is wrong (settings mesh.ca_passphrase_env /"
            " mesh.ca_passphrase_file, docs/security.md)"
        ) from None
