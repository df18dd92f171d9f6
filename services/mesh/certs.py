"""ragmesh's local certificate authority and the certificates every hop of the mesh presents.

Layout of the certificates directory (created mode 0700; every private key mode 0600):

    ca.pem, ca-key.pem                            the ragmesh CA
    envoy.pem, envoy-key.pem                      Envoy's server certificate (both listeners)
    envoy-upstream.pem, envoy-upstream-key.pem    the client certificate Envoy presents to services
    <service>.pem, <service>-key.pem              a service's server certificate
    <service>-client.pem, <service>-client-key.pem  a service's client certificate (it calls
                                                  other services through Envoy's internal listener)
    clients/<name>.pem, clients/<name>-key.pem    user client certificates ("client" by default)

Envoy gets its own client certificate ("envoy-upstream") rather than reusing its server one, so
each certificate carries one extended key usage and a service can tell Envoy apart from a user
by the peer's identity. Every certificate names its holder with a SPIFFE-style URI SAN
(`spiffe://ragmesh.internal/<kind>/<name>`, see `identity_uri`); Envoy's internal listener
admits only `.../service/...` identities.

Bringing your own CA: put ca.pem and every leaf certificate and key in this layout; ca-key.pem is
only read when a missing certificate has to be issued, so it may be left out.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import re
import socket
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The names certificates carry live one layer down, where the runtime checks them too.
from services.cert_paths import (
    CLIENTS_DIR,
    DEFAULT_CLIENT,
    DEFAULT_SERVICES,
    CertificatePaths,
    Identity,
    certificate_paths,
    client_identity,
)
from services.identities import ENVOY, ENVOY_UPSTREAM, identity_uri, service_dns_name
from services.runtime.tls_reload import public_key_der

# Leaf certificates are valid this long; the CA outlives them so it is rotated far less often.
LEAF_VALID_DAYS = 365
CA_VALID_DAYS = 3650
# A start-up refuses certificates that expire sooner than this.
EXPIRY_MARGIN_DAYS = 14
# Backdating absorbs small clock differences between the processes that check certificates.
BACKDATE = dt.timedelta(minutes=5)

# "openai" is the OpenAI-compatible HTTP adapter (services/openai_compat).
ORGANIZATION = "ragmesh"

# Identities are lowercase DNS labels: they become file names and DNS/URI SANs.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_RESERVED = {"ca", ENVOY, ENVOY_UPSTREAM}
_LOOPBACK_NAMES = ("localhost",)
_LOOPBACK_IPS = ("127.0.0.1", "::1")


class CertificateError(Exception):
    """A certificate is missing, expiring, untrusted or unsafe; the message says what to do."""


def validate_name(name: str) -> str:
    """A certificate name must be a DNS label: lowercase letters, digits, dashes, ≤ 63 chars."""
    if not _NAME.match(name):
        raise ValueError(
            f"invalid certificate name {name!r}: use lowercase letters, digits and dashes"
            " (not at either end), at most 63 characters"
        )
    return name


def ensure_certificates(
    certs_dir: Path,
    *,
    services: Sequence[str] = DEFAULT_SERVICES,
    valid_days: int = LEAF_VALID_DAYS,
    expiry_margin_days: int = EXPIRY_MARGIN_DAYS,
) -> CertificatePaths:
    """Create what is missing under `certs_dir`, check everything, and return the paths.

    Existing files are reused as they are. Raises CertificateError when a certificate expires
    within `expiry_margin_days`, is not signed by ca.pem, does not match its key, or a key is
    readable by others.
    """
    if valid_days <= expiry_margin_days:
        raise ValueError(
            f"valid_days ({valid_days}) must exceed expiry_margin_days ({expiry_margin_days})"
        )
    for service in services:
        validate_name(service)
        # Files are named <service>.pem and <service>-client.pem beside envoy*.pem and ca.pem.
        if service in _RESERVED or f"{service}-client" in services:
            raise ValueError(f"service name {service!r} collides with another certificate's name")
    paths = certificate_paths(certs_dir, services)
    certs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(certs_dir):
        ca = _load_or_create_ca(certs_dir, paths)
        specs = _leaf_specs(paths, services)
        for spec in specs:
            if not spec.identity.cert.exists() and not spec.identity.key.exists():
                _issue(ca, spec, valid_days)
        _reissue_misnamed(certs_dir, ca, specs, services, valid_days)
        _check_all(paths, expiry_margin_days)
    return paths


def issue_client_certificate(
    certs_dir: Path, name: str, *, valid_days: int = LEAF_VALID_DAYS
) -> tuple[Path, Path]:
    """Issue clients/<name>.pem from the ragmesh CA (for `ragmesh certs client NAME`)."""
    validate_name(name)
    identity = client_identity(certs_dir, name)
    with _locked(certs_dir):
        if identity.cert.exists() or identity.key.exists():
            raise CertificateError(
                f"{identity.cert} already exists; delete it and {identity.key} to issue it again,"
                " or choose another name"
            )
        ca = _load_ca(certs_dir / "ca.pem", certs_dir / "ca-key.pem", need_key=True)
        check_expiry(certs_dir / "ca.pem")
        spec = _LeafSpec(identity, name, (), identity_uri("client", name), is_server=False)
        _issue(ca, spec, valid_days)
    return identity.cert, identity.key


def check_expiry(
    cert_path: Path,
    *,
    margin_days: int = EXPIRY_MARGIN_DAYS,
    now: dt.datetime | None = None,
) -> dt.datetime:
    """Return when the certificate expires; raise CertificateError if within `margin_days`."""
    cert = _read_cert(cert_path)
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


# --- internals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _LeafSpec:
    identity: Identity
    common_name: str
    dns_names: Sequence[str]
    uri: str
    is_server: bool
    ip_addresses: Sequence[str] = ()


@dataclass(frozen=True)
class _Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | None


@contextmanager
def _locked(certs_dir: Path) -> Iterator[None]:
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


def _load_or_create_ca(certs_dir: Path, paths: CertificatePaths) -> _Ca:
    ca_key_path = certs_dir / "ca-key.pem"
    if paths.ca.exists():
        # The key is only needed when something is missing (a brought CA may ship without it).
        leaves_missing = any(not i.cert.exists() and not i.key.exists() for i in paths.all())
        return _load_ca(paths.ca, ca_key_path, need_key=leaves_missing)
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
    _write_key(ca_key_path, key, passphrase=_ca_passphrase_source())
    _write_cert(paths.ca, cert)
    return _Ca(cert, key)


def _load_ca(cert_path: Path, key_path: Path, *, need_key: bool) -> _Ca:
    if not cert_path.exists():
        raise CertificateError(
            f"{cert_path} does not exist; run `ragmesh up` once to create the ragmesh CA"
        )
    cert = _read_cert(cert_path)
    if not need_key:
        return _Ca(cert, None)
    if not key_path.exists():
        raise CertificateError(
            f"{key_path} is missing, so no new certificate can be issued from {cert_path}."
            " With your own CA, issue the missing certificates yourself (docs/operations.md)"
        )
    _check_key_mode(key_path)
    key = _load_ca_key(key_path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{key_path}: ragmesh issues certificates with EC keys only")
    return _Ca(cert, key)


def _reissue_misnamed(
    certs_dir: Path, ca: _Ca, specs: Sequence[_LeafSpec], services: Sequence[str], valid_days: int
) -> None:
    """Issue again the service server certificates whose names differ from what ragmesh issues
    now (older ones also named localhost and loopback IPs), so an existing state folder gets
    certificates that name only their service.

    Needs the CA key: where it cannot be read (a brought CA without ca-key.pem, or a service
    process, which never gets the passphrase) the old certificates are kept; they still carry the
    service's name, so Envoy keeps verifying them, and the next `ragmesh up` re-issues them.
    """
    service_specs = {spec.common_name: spec for spec in specs if spec.is_server}
    misnamed = [
        service_specs[service]
        for service in services
        if service_specs[service].identity.cert.exists()
        and _names(_read_cert(service_specs[service].identity.cert))
        != _expected_names(service_specs[service])
    ]
    if not misnamed:
        return
    if ca.key is None:
        try:
            ca = _load_ca(certs_dir / "ca.pem", certs_dir / "ca-key.pem", need_key=True)
        except CertificateError:
            return
    for spec in misnamed:
        _issue(ca, spec, valid_days)


def _names(cert: x509.Certificate) -> set[str]:
    """A certificate's DNS and IP address SANs."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return set(sans.get_values_for_type(x509.DNSName)) | ips


def _expected_names(spec: _LeafSpec) -> set[str]:
    return {*spec.dns_names, *(str(ipaddress.ip_address(ip)) for ip in spec.ip_addresses)}


def _leaf_specs(paths: CertificatePaths, services: Sequence[str]) -> list[_LeafSpec]:
    """Every certificate ragmesh issues for itself, with its names and purpose."""
    specs = [
        _LeafSpec(
            paths.envoy,
            ENVOY,
            (*_LOOPBACK_NAMES, *_machine_hostnames()),
            identity_uri("envoy", ENVOY),
            is_server=True,
            # Clients reach Envoy by address (127.0.0.1:50051), so its certificate names these.
            ip_addresses=_LOOPBACK_IPS,
        ),
        _LeafSpec(
            paths.envoy_upstream,
            ENVOY_UPSTREAM,
            (),
            identity_uri("envoy", ENVOY_UPSTREAM),
            is_server=False,
        ),
    ]
    for service in services:
        uri = identity_uri("service", service)
        # Only the service's own name: a client that dials a replica by address must verify
        # that name (services/runtime/tls.py, replica_channel_options), as Envoy does.
        dns_names = (service_dns_name(service),)
        specs.append(_LeafSpec(paths.services[service], service, dns_names, uri, is_server=True))
        specs.append(
            _LeafSpec(paths.service_clients[service], f"{service}-client", (), uri, is_server=False)
        )
    specs.append(
        _LeafSpec(paths.client, DEFAULT_CLIENT, (), identity_uri("client", DEFAULT_CLIENT), False)
    )
    return specs


def _issue(ca: _Ca, spec: _LeafSpec, valid_days: int) -> None:
    assert ca.key is not None, "the CA key is loaded whenever a certificate is missing"
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    # A leaf never outlives the CA that vouches for it.
    not_after = min(now + dt.timedelta(days=valid_days), ca.cert.not_valid_after_utc)
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    sans.append(x509.UniformResourceIdentifier(spec.uri))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if spec.is_server else ExtendedKeyUsageOID.CLIENT_AUTH
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    spec.identity.cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Key first: a certificate on disk always has its key beside it.
    _write_key(spec.identity.key, key)
    _write_cert(spec.identity.cert, cert)


def _check_all(paths: CertificatePaths, margin_days: int) -> None:
    ca_cert = _read_cert(paths.ca)
    check_expiry(paths.ca, margin_days=margin_days)
    for identity in paths.all():
        for path in (identity.cert, identity.key):
            if not path.exists():
                raise CertificateError(
                    f"{path} is missing; restore it, or delete {identity.cert} and"
                    f" {identity.key} and rerun to issue a new pair"
                )
        cert = _read_cert(identity.cert)
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateError(
                f"{identity.cert} is not signed by {paths.ca}. {_renew_advice(identity.cert)}"
            ) from None
        check_expiry(identity.cert, margin_days=margin_days)
        _check_key_mode(identity.key)
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


def _check_key_mode(path: Path) -> None:
    # As ssh does: a private key others can read is refused rather than used.
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CertificateError(
            f"{path} has mode {mode:04o}; private keys must be readable by their owner only:"
            f" chmod 600 {path}"
        )


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise CertificateError(f"{path} is missing") from None
    except ValueError as error:
        raise CertificateError(f"{path} is not a PEM certificate: {error}") from None


# --- the CA key's passphrase (issue 10) ---------------------------------------------------
# The CA key is encrypted at rest when a passphrase source is set: `ragmesh up` and `ragmesh
# certs` set one from the settings (services/mesh/ca_secret.py); servers never do, so they
# cannot use the CA key (and never need it: `up` issues every certificate first).
def _no_passphrase() -> bytes | None:
    return None


_passphrase_source: dict[str, Callable[[], bytes | None]] = {"source": _no_passphrase}


def use_ca_passphrase(source: Callable[[], bytes | None]) -> None:
    """Encrypt a new CA key with, and decrypt the CA key with, what `source` returns."""
    _passphrase_source["source"] = source


def _ca_passphrase_source() -> bytes | None:
    return _passphrase_source["source"]()


def ca_key_is_encrypted(key_path: Path) -> bool:
    return b"ENCRYPTED" in key_path.read_bytes()[:64]


def _load_ca_key(key_path: Path) -> PrivateKeyTypes:
    if not ca_key_is_encrypted(key_path):
        return serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    passphrase = _ca_passphrase_source()
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


def _write_key(
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
    _write_atomic(path, data, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    # Owner-only like everything in the state folder: only ragmesh and Envoy read them.
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o600)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
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


def _machine_hostnames() -> list[str]:
    """This machine's names that are valid DNS names, for Envoy's client-facing certificate."""
    names: list[str] = []
    for name in (socket.gethostname(), socket.getfqdn()):
        name = name.lower().rstrip(".")
        labels = name.split(".")
        if (
            name
            and name not in names
            and name != "localhost"
            and all(_NAME.match(label) for label in labels)
        ):
            names.append(name)
    return names
