"""Scoped, expiring, rotatable API keys and the checks a server makes with them."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import grpc
import pytest

from ragmeshd.runtime.api import API_FILES
from ragmeshd.runtime.auth import KeyVerifier, RefusalLog
from ragmeshd.runtime.keystore import (
    KeyStore,
    RateLimit,
    StoredKey,
    parse_duration,
    parse_rate,
    presented_key_id,
)
from ragmeshd.runtime.redaction import redact
from ragmeshd.runtime.scopes import (
    DEFAULT_SCOPES,
    METHOD_SCOPES,
    SCOPES,
    SERVICE_SCOPES,
    parse_scopes,
    required_scope,
)

SEARCH = "/ragmesh.search.v1.SearchService/"


def test_every_rpc_of_the_api_needs_a_known_scope() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for file in API_FILES
        for service in file.services_by_name.values()
        for method in service.methods
    }
    missing = methods - METHOD_SCOPES.keys()
    assert not missing, f"add these RPCs to ragmeshd/runtime/scopes.py METHOD_SCOPES: {missing}"
    assert set(METHOD_SCOPES.values()) <= set(SCOPES)
    assert required_scope("/grpc.health.v1.Health/Check") is None
    assert required_scope("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo") is None
    assert required_scope("/some.Unknown/Method") == "admin"  # closed until decided


def test_scopes_parse_and_refuse_unknown_ones() -> None:
    assert parse_scopes("embed, search.read,embed") == ("embed", "search.read")
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes("embed,delete-everything")
    assert parse_duration("30d") == 30 * 86400 and parse_duration("90s") == 90
    assert parse_rate("50/s") == 50 and parse_rate("600/m") == 10
    for bad in ("30", "-1d", "0/s", "fast"):
        with pytest.raises(ValueError):
            parse_duration(bad) if "/" not in bad else parse_rate(bad)


def verifier(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> KeyVerifier:
    monkeypatch.setattr("ragmeshd.runtime.auth.RELOAD_INTERVAL_S", 0.0)
    return KeyVerifier(store)


def test_a_key_without_the_scope_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(tmp_path / "keys")
    reader = store.create("reader")  # the default scopes
    assert store.load()[0].scopes == DEFAULT_SCOPES
    admin = store.create("root", scopes=("admin",))
    check = verifier(store, monkeypatch).check
    assert check(reader, f"{SEARCH}Search").code is None
    denied = check(reader, f"{SEARCH}DeleteCollection")
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert "'search.admin'" in denied.message and presented_key_id(reader) in denied.message
    assert check(admin, f"{SEARCH}DeleteCollection").code is None
    assert check(reader + "x", f"{SEARCH}Search").code == grpc.StatusCode.UNAUTHENTICATED


def test_expired_and_rotated_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore(tmp_path / "keys")
    short = store.create("short", expires_at=time.time() - 1)
    check = verifier(store, monkeypatch).check
    expired = check(short, f"{SEARCH}Search")
    assert expired.code == grpc.StatusCode.UNAUTHENTICATED and "expired" in expired.message

    old = store.create("app", scopes=("search.read",), rate=RateLimit(5, 10))
    old_id = presented_key_id(old)
    assert old_id is not None
    new, old_record = store.rotate(old_id, grace_s=3600)
    new_record = store.get(presented_key_id(new) or "")
    assert (new_record.name, new_record.scopes, new_record.rate_limit) == (
        "app",
        ("search.read",),
        RateLimit(5, 10),
    )
    assert old_record.rotated_to == new_record.key_id
    # Both work during the grace period; after it only the new one.
    assert check(old, f"{SEARCH}Search").code is None
    assert check(new, f"{SEARCH}Search").code is None
    store.rotate(new_record.key_id, grace_s=0)
    assert check(new, f"{SEARCH}Search").code == grpc.StatusCode.UNAUTHENTICATED


def test_named_keys_get_their_scopes_and_old_stores_keep_working(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.ensure_named_key("admin")
    store.ensure_named_key("service-coordinator")
    scopes = {key.name: key.scopes for key in store.load()}
    assert scopes == {"admin": ("admin",), "service-coordinator": SERVICE_SCOPES["coordinator"]}
    # A store written before scopes existed.
    legacy = {"key_id": "0" * 12, "name": "service-search", "secret_sha256": "x", "created_at": 1}
    assert StoredKey.from_json(legacy).scopes == ("embed",)
    store.path.write_text(json.dumps({"keys": [legacy]}))
    assert store.load()[0].scopes == ("embed",)


def test_refusals_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    log = RefusalLog(window_s=3600, burst=3)
    # Refusals are audit events (runtime/audit.py): their own logger and stream.
    with caplog.at_level(logging.INFO, logger="ragmesh.audit"):
        for _ in range(50):
            log.refused("/m", grpc.StatusCode.UNAUTHENTICATED, "abc", "ipv4:1.2.3.4:5")
    refused = [r for r in caplog.records if r.getMessage() == "call refused"]
    assert len(refused) == 3
    assert refused[0].__dict__["key_id"] == "abc"


def test_logs_never_carry_passwords_or_key_secrets() -> None:
    secret = "S" * 43
    line = redact(
        f"postgresql://app:hunter2@db:5432/rag?password=hunter2 host=x password='hunter2'"
        f" rmk_0123456789ab_{secret}"
    )
    assert "hunter2" not in line and secret not in line
    assert "postgresql://app:***@db:5432/rag" in line and "rmk_0123456789ab_***" in line
