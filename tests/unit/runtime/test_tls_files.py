"""Servers read the mesh's certificate files and never make them: only `ragmesh up` and
`ragmesh certs` hold the CA (ragmeshd/runtime/tls.py, ragmeshd/state.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragmeshd.pki.certs import ensure_certificates
from ragmeshd.runtime.tls import (
    MissingCertificateError,
    caller_credentials_for,
    server_credentials_for,
)
from ragmeshd.settings import Settings, load_settings
from ragmeshd.state import certificate_paths


@pytest.fixture
def tls_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RAGMESH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAGMESH_MESH__TLS", "true")
    return load_settings()


def test_a_server_without_its_certificate_says_how_to_make_it_and_makes_nothing(
    tls_settings: Settings,
) -> None:
    with pytest.raises(MissingCertificateError, match=r"search server certificate .*ragmesh up"):
        server_credentials_for(tls_settings, "search")
    with pytest.raises(MissingCertificateError, match="search client certificate"):
        caller_credentials_for(tls_settings, "search")
    # No CA, no leaf: a server process cannot mint certificates.
    assert not (tls_settings.state_dir / "certs").exists()


def test_a_server_reads_the_files_up_made(tls_settings: Settings) -> None:
    made = ensure_certificates(tls_settings.state_dir / "certs")
    assert made == certificate_paths(tls_settings.state_dir / "certs")
    assert server_credentials_for(tls_settings, "search") is not None
    assert caller_credentials_for(tls_settings, "coordinator") is not None
