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
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ragmeshd.identities import ENVOY, ENVOY_UPSTREAM, identity_uri, service_dns_name
from ragmeshd.pki.authority import (
    BACKDATE,
    ORGANIZATION,
    CertificateAuthority,
    load_ca,
    load_or_create_ca,
    locked,
)
from ragmeshd.pki.expiry import EXPIRY_MARGIN_DAYS, check_all, check_expiry
from ragmeshd.pki.pem_files import (
    CertificateError,
    read_cert,
    write_cert,
    write_key,
)

# The names certificates carry live one layer down, where the runtime checks them too.
from ragmeshd.runtime.audit import audit
from ragmeshd.state import (
    DEFAULT_CLIENT,
    DEFAULT_SERVICES,
    CertificatePaths,
    Identity,
    certificate_paths,
    client_identity,
)

# Leaf certificates are valid this long; the CA outlives them so it is rotated far less often.
LEAF_VALID_DAYS = 365


# Identities are lowercase DNS labels: they become file names and DNS/URI SANs.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_RESERVED = {"ca", ENVOY, ENVOY_UPSTREAM}
_LOOPBACK_NAMES = ("localhost",)
_LOOPBACK_IPS = ("127.0.0.1", "::1")


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
    with locked(certs_dir):
        ca = load_or_create_ca(certs_dir, paths)
        specs = leaf_specs(paths, services)
        for spec in specs:
            if not spec.identity.cert.exists() and not spec.identity.key.exists():
                issue_leaf(ca, spec, valid_days)
        _reissue_misnamed(certs_dir, ca, specs, services, valid_days)
        check_all(paths, expiry_margin_days)
    return paths


def issue_client_certificate(
    certs_dir: Path, name: str, *, valid_days: int = LEAF_VALID_DAYS
) -> tuple[Path, Path]:
    """Issue clients/<name>.pem from the ragmesh CA (for `ragmesh certs client NAME`)."""
    validate_name(name)
    identity = client_identity(certs_dir, name)
    with locked(certs_dir):
        if identity.cert.exists() or identity.key.exists():
            raise CertificateError(
                f"{identity.cert} already exists; delete it and {identity.key} to issue it again,"
                " or choose another name"
            )
        ca = load_ca(certs_dir / "ca.pem", certs_dir / "ca-key.pem", need_key=True)
        check_expiry(certs_dir / "ca.pem")
        spec = LeafSpec(identity, name, (), identity_uri("client", name), is_server=False)
        issue_leaf(ca, spec, valid_days)
    return identity.cert, identity.key


# --- internals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LeafSpec:
    identity: Identity
    common_name: str
    dns_names: Sequence[str]
    uri: str
    is_server: bool
    ip_addresses: Sequence[str] = ()


def _reissue_misnamed(
    certs_dir: Path,
    ca: CertificateAuthority,
    specs: Sequence[LeafSpec],
    services: Sequence[str],
    valid_days: int,
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
        and _names(read_cert(service_specs[service].identity.cert))
        != _expected_names(service_specs[service])
    ]
    if not misnamed:
        return
    if ca.key is None:
        try:
            ca = load_ca(certs_dir / "ca.pem", certs_dir / "ca-key.pem", need_key=True)
        except CertificateError:
            return
    for spec in misnamed:
        issue_leaf(ca, spec, valid_days)


def _names(cert: x509.Certificate) -> set[str]:
    """A certificate's DNS and IP address SANs."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return set(sans.get_values_for_type(x509.DNSName)) | ips


def _expected_names(spec: LeafSpec) -> set[str]:
    return {*spec.dns_names, *(str(ipaddress.ip_address(ip)) for ip in spec.ip_addresses)}


def leaf_specs(paths: CertificatePaths, services: Sequence[str]) -> list[LeafSpec]:
    """Every certificate ragmesh issues for itself, with its names and purpose."""
    specs = [
        LeafSpec(
            paths.envoy,
            ENVOY,
            (*_LOOPBACK_NAMES, *_machine_hostnames()),
            identity_uri("envoy", ENVOY),
            is_server=True,
            # Clients reach Envoy by address (127.0.0.1:50051), so its certificate names these.
            ip_addresses=_LOOPBACK_IPS,
        ),
        LeafSpec(
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
        # that name (ragmeshd/runtime/tls.py, replica_channel_options), as Envoy does.
        dns_names = (service_dns_name(service),)
        specs.append(LeafSpec(paths.services[service], service, dns_names, uri, is_server=True))
        specs.append(
            LeafSpec(paths.service_clients[service], f"{service}-client", (), uri, is_server=False)
        )
    specs.append(
        LeafSpec(paths.client, DEFAULT_CLIENT, (), identity_uri("client", DEFAULT_CLIENT), False)
    )
    return specs


def issue_leaf(ca: CertificateAuthority, spec: LeafSpec, valid_days: int) -> None:
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
    write_key(spec.identity.key, key)
    write_cert(spec.identity.cert, cert)
    audit(
        "certificate issued",
        common_name=spec.common_name,
        uri=spec.uri,
        serial=f"{cert.serial_number:x}",
        not_after=not_after.isoformat(),
    )


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
