"""Keys limited to collections and groups, and a service calling with its caller's authority
(runtime/tenancy.py, runtime/auth.py): what an attacker holding one key would try."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from ragmeshd.runtime.auth import KeyVerifier
from ragmeshd.runtime.keystore import KeyStore, StoredKey
from ragmeshd.runtime.scopes import SERVICE_COLLECTIONS, SERVICE_SCOPES
from ragmeshd.runtime.tenancy import (
    CollectionDenied,
    Principal,
    TenancyError,
    check_collection,
    parse_collections,
    parse_groups,
)

SEARCH = "/ragmesh.search.v1.SearchService/"


def test_patterns_and_groups_parse_and_refuse_odd_text() -> None:
    assert parse_collections("team-a-*, shared,shared") == ("team-a-*", "shared")
    assert parse_groups(["finance,legal", "legal"]) == ("finance", "legal")
    for bad in ("", "Team-A", "a/b", "team a"):
        with pytest.raises(TenancyError):
            parse_collections(bad)
    with pytest.raises(TenancyError):
        parse_groups("finance,le gal")


def test_a_principal_uses_only_matching_collections() -> None:
    principal = Principal("0a1b2c3d4e5f", ("team-a-*", "shared"))
    assert principal.may_use("team-a-docs") and principal.may_use("shared")
    assert not principal.may_use("team-b-docs") and not principal.may_use("shared2")
    with pytest.raises(CollectionDenied, match="team-b-docs"):
        check_collection("team-b-docs", principal)
    check_collection("anything")  # no principal: keys are off


def test_keys_keep_their_boundary_through_the_store_and_rotation(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key = store.create("team-a", collections=("team-a-*",), groups=("finance",))
    stored = store.load()[0]
    assert (stored.collections, stored.groups) == (("team-a-*",), ("finance",))
    _, old = store.rotate(stored.key_id, 0)
    assert store.load()[-1].collections == ("team-a-*",) and store.load()[-1].groups == ("finance",)
    assert old.key_id in key
    # A key stored before tenancy existed reaches every collection and no group.
    legacy = StoredKey.from_json(
        {"key_id": "0a1b2c3d4e5f", "name": "x", "secret_sha256": "0", "created_at": 0.0}
    )
    assert legacy.collections == ("*",) and legacy.groups == ()


def test_the_coordinators_key_cannot_search_on_its_own(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    coordinator = store.ensure_named_key("service-coordinator").read_text().strip()
    assert "search.admin" not in SERVICE_SCOPES["coordinator"]
    assert store.load()[0].collections == SERVICE_COLLECTIONS["coordinator"]
    verifier = KeyVerifier(store)
    verdict = verifier.check(coordinator, f"{SEARCH}Search")
    assert verdict.code is grpc.StatusCode.PERMISSION_DENIED
    # ... but it may create, write and delete its interactions collection (and only that:
    # the servicer checks the name against the key's collections).
    verdict = verifier.check(coordinator, f"{SEARCH}CreateCollection")
    assert verdict.code is None and verdict.principal is not None
    assert not verdict.principal.may_use("team-b-docs")


def test_a_delegated_call_runs_within_the_callers_boundary(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    coordinator = store.ensure_named_key("service-coordinator").read_text().strip()
    asker = store.create("team-a", scopes=("ask",), collections=("team-a-*",), groups=("hr",))
    verifier = KeyVerifier(store)
    verdict = verifier.check(coordinator, f"{SEARCH}Search", asker)
    assert verdict.code is None and verdict.principal is not None
    assert verdict.principal.key_id in asker
    assert verdict.principal.collections == ("team-a-*",)
    assert verdict.principal.document_groups() == ("hr",)
    # Delegation reads only: no write, and no other RPC, with a caller's key.
    verdict = verifier.check(coordinator, f"{SEARCH}DeleteCollection", asker)
    assert verdict.code is grpc.StatusCode.PERMISSION_DENIED


def test_delegation_needs_the_delegate_scope_and_a_usable_callers_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    coordinator = store.ensure_named_key("service-coordinator").read_text().strip()
    reader = store.create("reader", scopes=("search.read",), collections=("team-a-*",))
    admin = store.create("other", scopes=("admin",))
    embed_only = store.create("embedder", scopes=("embed",))
    verifier = KeyVerifier(store)
    # A user key forwarding another key (to widen its reach) is refused.
    refused = verifier.check(reader, f"{SEARCH}Search", admin)
    assert refused.code is grpc.StatusCode.PERMISSION_DENIED and "delegate" in refused.message
    # A forged, revoked or under-scoped caller's key gets nothing.
    forged = verifier.check(coordinator, f"{SEARCH}Search", admin[:-4] + "AAAA")
    assert forged.code is grpc.StatusCode.UNAUTHENTICATED
    assert (
        verifier.check(coordinator, f"{SEARCH}Search", embed_only).code
        is grpc.StatusCode.PERMISSION_DENIED
    )
    store.revoke(store.load()[1].key_id)  # reader
    verifier = KeyVerifier(store)
    assert (
        verifier.check(coordinator, f"{SEARCH}Search", reader).code
        is grpc.StatusCode.UNAUTHENTICATED
    )


def test_admin_keys_see_every_document_and_boundaries_key_the_cache() -> None:
    admin = StoredKey("0a1b2c3d4e5f", "a", "0", 0.0, scopes=("admin",)).principal()
    user = StoredKey("0a1b2c3d4e5e", "b", "0", 0.0, groups=("hr",)).principal()
    other = StoredKey("0a1b2c3d4e5d", "c", "0", 0.0, groups=("finance",)).principal()
    assert admin.document_groups() is None and user.document_groups() == ("hr",)
    assert len({admin.boundary(), user.boundary(), other.boundary()}) == 3


def test_interactions_belong_to_their_key() -> None:
    owner = StoredKey("0a1b2c3d4e5f", "a", "0", 0.0, scopes=("ask",)).principal()
    stranger = StoredKey("0a1b2c3d4e5e", "b", "0", 0.0, scopes=("ask", "feedback")).principal()
    exporter_a = StoredKey(
        "0a1b2c3d4e5d", "c", "0", 0.0, scopes=("interactions.export",), collections=("team-a-*",)
    ).principal()
    admin = StoredKey("0a1b2c3d4e5c", "d", "0", 0.0, scopes=("admin",)).principal()
    assert owner.may_read_interaction("0a1b2c3d4e5f", ["team-b-docs"])
    assert not stranger.may_read_interaction("0a1b2c3d4e5f", ["team-a-docs"])
    # An exporter reads others' interactions only within its own collections.
    assert exporter_a.may_read_interaction("0a1b2c3d4e5f", ["team-a-docs"])
    assert not exporter_a.may_read_interaction("0a1b2c3d4e5f", ["team-a-docs", "team-b-docs"])
    assert admin.may_read_interaction("", ["anything"])
