"""The CA key is encrypted at rest and only commands given its passphrase can use it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ragmeshd.pki import authority
from ragmeshd.pki.certs import CertificateError, ensure_certificates, issue_client_certificate
from ragmeshd.pki.passphrase import forget_passphrase, protect_ca_key, use_settings_passphrase
from ragmeshd.settings import Settings, load_settings

ENV = "RAGMESH_TEST_CA_PASSPHRASE"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.delenv(ENV, raising=False)
    configured = load_settings(
        state_dir=tmp_path / "state",
        mesh={"ca_passphrase_env": ENV, "ca_passphrase_file": str(tmp_path / "secret")},
    )
    yield configured
    forget_passphrase(configured)  # the passphrase source is process-wide


def test_a_new_ca_key_is_encrypted_with_a_generated_passphrase(
    settings: Settings, tmp_path: Path
) -> None:
    certs_dir = tmp_path / "certs"
    use_settings_passphrase(settings)
    ensure_certificates(certs_dir)
    key = (certs_dir / "ca-key.pem").read_text()
    assert key.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    secret = tmp_path / "secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text().strip()) >= 32
    issue_client_certificate(certs_dir, "alice")  # the command that has the passphrase can

    forget_passphrase(settings)  # what a service is: no passphrase
    with pytest.raises(CertificateError, match="encrypted"):
        issue_client_certificate(certs_dir, "mallory")


def test_the_environment_passphrase_wins_and_a_wrong_one_is_named(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs_dir = tmp_path / "certs"
    monkeypatch.setenv(ENV, "from the environment")
    use_settings_passphrase(settings)
    ensure_certificates(certs_dir)
    assert not (tmp_path / "secret").exists()
    forget_passphrase(settings)
    monkeypatch.setenv(ENV, "another one")
    use_settings_passphrase(settings)
    with pytest.raises(CertificateError, match="passphrase is wrong"):
        issue_client_certificate(certs_dir, "bob")


def test_a_plain_ca_key_from_before_is_encrypted_in_place(
    settings: Settings, tmp_path: Path
) -> None:
    certs_dir = tmp_path / "certs"
    ensure_certificates(certs_dir)  # no passphrase source: the old, plain key
    assert not authority.ca_key_is_encrypted(certs_dir / "ca-key.pem")
    protect_ca_key(settings, certs_dir)
    assert authority.ca_key_is_encrypted(certs_dir / "ca-key.pem")
    issue_client_certificate(certs_dir, "carol")
