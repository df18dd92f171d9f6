"""The local CA and the mesh's certificates (ragmeshd/pki/certs.py)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from ragmeshd.identities import identity_uri, service_dns_name
from ragmeshd.pki import authority, certs
from ragmeshd.pki.certs import (
    CertificateError,
    CertificatePaths,
    check_expiry,
    ensure_certificates,
    issue_client_certificate,
)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def certs_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "certs"


@pytest.fixture
def paths(certs_dir: Path) -> CertificatePaths:
    return ensure_certificates(certs_dir)


def test_first_call_creates_every_certificate_with_private_modes(
    certs_dir: Path, paths: CertificatePaths
) -> None:
    assert _mode(certs_dir) == 0o700
    services = {"embeddings", "search", "llm", "coordinator", "openai"}
    assert set(paths.services) == services
    assert set(paths.service_clients) == services
    identities = list(paths.all())
    assert len(identities) == 2 + 5 + 5 + 1
    assert _mode(certs_dir / "ca-key.pem") == 0o600
    for identity in identities:
        assert identity.cert.is_file() and identity.key.is_file()
        assert _mode(identity.key) == 0o600, identity.key
    assert paths.client.cert == certs_dir / "clients" / "client.pem"


def test_later_calls_reuse_the_files(certs_dir: Path, paths: CertificatePaths) -> None:
    before = {p: p.read_bytes() for i in paths.all() for p in (i.cert, i.key)}
    before[paths.ca] = paths.ca.read_bytes()

    again = ensure_certificates(certs_dir)

    assert again == paths
    assert {p: p.read_bytes() for p in before} == before


def test_a_new_service_gets_certificates_from_the_existing_ca(
    certs_dir: Path, paths: CertificatePaths
) -> None:
    ca_before = paths.ca.read_bytes()
    more = ensure_certificates(certs_dir, services=("embeddings", "reranker"))
    assert more.ca.read_bytes() == ca_before
    _cert(more.services["reranker"].cert).verify_directly_issued_by(_cert(more.ca))


def test_chains_verify_against_the_ca_for_their_purpose(paths: CertificatePaths) -> None:
    ca = _cert(paths.ca)
    store = Store([ca])
    now = dt.datetime.now(dt.UTC)
    builder = PolicyBuilder().store(store).time(now)

    for service, identity in paths.services.items():
        verifier = builder.build_server_verifier(x509.DNSName(service_dns_name(service)))
        verifier.verify(_cert(identity.cert), [])
    envoy_names: list[x509.DNSName | x509.IPAddress] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    for subject in envoy_names:
        builder.build_server_verifier(subject).verify(_cert(paths.envoy.cert), [])

    client_verifier = builder.build_client_verifier()
    for identity in [paths.envoy_upstream, paths.client, *paths.service_clients.values()]:
        client_verifier.verify(_cert(identity.cert), [])


def _dns_and_ip_names(path: Path) -> list[str]:
    sans = _cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [
        *sans.get_values_for_type(x509.DNSName),
        *map(str, sans.get_values_for_type(x509.IPAddress)),
    ]


def test_a_server_certificate_names_only_its_service(paths: CertificatePaths) -> None:
    builder = PolicyBuilder().store(Store([_cert(paths.ca)])).time(dt.datetime.now(dt.UTC))
    search = _cert(paths.services["search"].cert)
    assert _dns_and_ip_names(paths.services["search"].cert) == ["search.ragmesh.internal"]
    wrong_names: list[x509.DNSName | x509.IPAddress] = [
        x509.DNSName("localhost"),
        x509.DNSName(service_dns_name("embeddings")),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    for wrong in wrong_names:
        with pytest.raises(VerificationError):
            builder.build_server_verifier(wrong).verify(search, [])


def test_a_server_certificate_naming_more_is_reissued(
    paths: CertificatePaths, certs_dir: Path
) -> None:
    """A state folder from before: its service certificates also named localhost and IPs."""
    identity = paths.services["search"]
    ca = authority.load_ca(paths.ca, certs_dir / "ca-key.pem", need_key=True)
    old_names = ("localhost", service_dns_name("search"))
    spec = certs.LeafSpec(
        identity, "search", old_names, identity_uri("service", "search"), True, ("127.0.0.1",)
    )
    certs.issue_leaf(ca, spec, 30)
    untouched = paths.services["embeddings"].cert.read_bytes()

    ensure_certificates(certs_dir)

    assert _dns_and_ip_names(identity.cert) == ["search.ragmesh.internal"]
    reissued = _cert(identity.cert)
    assert reissued.not_valid_after_utc - reissued.not_valid_before_utc > dt.timedelta(days=300)
    assert paths.services["embeddings"].cert.read_bytes() == untouched


def test_identities_name_their_holder(paths: CertificatePaths) -> None:
    def uris(path: Path) -> list[str]:
        san = _cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return san.value.get_values_for_type(x509.UniformResourceIdentifier)

    assert uris(paths.envoy_upstream.cert) == [identity_uri("envoy", "envoy-upstream")]
    assert uris(paths.service_clients["search"].cert) == [identity_uri("service", "search")]
    assert uris(paths.client.cert) == [identity_uri("client", "client")]


def test_a_certificate_expiring_soon_is_refused_with_advice(certs_dir: Path) -> None:
    ensure_certificates(certs_dir, valid_days=20, expiry_margin_days=14)

    with pytest.raises(CertificateError) as caught:
        ensure_certificates(certs_dir, expiry_margin_days=30)

    message = str(caught.value)
    assert "envoy.pem expires on" in message
    assert "at least 30 days" in message
    assert "Delete" in message and "rerun" in message


def test_check_expiry_reports_expired_certificates(paths: CertificatePaths) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    with pytest.raises(CertificateError, match="expired on"):
        check_expiry(paths.envoy.cert, now=later)
    not_after = check_expiry(paths.envoy.cert)
    assert not_after > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)


def test_a_certificate_from_another_ca_is_refused(tmp_path: Path, certs_dir: Path) -> None:
    paths = ensure_certificates(certs_dir)
    other = ensure_certificates(tmp_path / "other")
    paths.services["search"].cert.write_bytes(other.services["search"].cert.read_bytes())
    paths.services["search"].key.write_bytes(other.services["search"].key.read_bytes())

    with pytest.raises(CertificateError, match=r"search\.pem is not signed by .*ca\.pem"):
        ensure_certificates(certs_dir)


def test_a_key_that_others_can_read_is_refused(paths: CertificatePaths, certs_dir: Path) -> None:
    paths.envoy.key.chmod(0o644)
    with pytest.raises(CertificateError, match="chmod 600"):
        ensure_certificates(certs_dir)


def test_a_deleted_pair_is_reissued(paths: CertificatePaths, certs_dir: Path) -> None:
    old = paths.envoy.cert.read_bytes()
    paths.envoy.cert.unlink()
    paths.envoy.key.unlink()
    ensure_certificates(certs_dir)
    assert paths.envoy.cert.read_bytes() != old


def test_a_lost_ca_is_not_silently_replaced(paths: CertificatePaths, certs_dir: Path) -> None:
    paths.ca.unlink()
    with pytest.raises(CertificateError, match=r"ca\.pem is missing"):
        ensure_certificates(certs_dir)


def test_a_brought_ca_needs_no_key_when_nothing_is_missing(
    paths: CertificatePaths, certs_dir: Path
) -> None:
    (certs_dir / "ca-key.pem").unlink()
    assert ensure_certificates(certs_dir) == paths
    paths.envoy.cert.unlink()
    paths.envoy.key.unlink()
    with pytest.raises(CertificateError, match=r"ca-key\.pem is missing"):
        ensure_certificates(certs_dir)


def test_issue_client_certificate(paths: CertificatePaths, certs_dir: Path) -> None:
    cert_path, key_path = issue_client_certificate(certs_dir, "alice-laptop")

    assert cert_path == certs_dir / "clients" / "alice-laptop.pem"
    assert _mode(key_path) == 0o600
    cert = _cert(cert_path)
    verifier = PolicyBuilder().store(Store([_cert(paths.ca)])).build_client_verifier()
    verifier.verify(cert, [])
    with pytest.raises(CertificateError, match="already exists"):
        issue_client_certificate(certs_dir, "alice-laptop")


@pytest.mark.parametrize("name", ["Alice", "a_b", "-a", "a-", "", "a" * 64, "a.b", "ä"])
def test_client_names_are_validated(paths: CertificatePaths, certs_dir: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid certificate name"):
        issue_client_certificate(certs_dir, name)


def test_issue_client_certificate_needs_the_ca(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="ragmesh up"):
        issue_client_certificate(tmp_path / "nowhere", "bob")


def test_service_names_may_not_collide(certs_dir: Path) -> None:
    with pytest.raises(ValueError):
        ensure_certificates(certs_dir, services=("envoy",))
    with pytest.raises(ValueError):
        ensure_certificates(certs_dir, services=("a", "a-client"))
