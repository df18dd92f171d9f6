"""A server starts from a key store it did not make (issue 26): on Kubernetes each pod mounts
keys.json and only its own service key from the Secret, read-only; the admin key, which can
do everything, is in no pod."""

from __future__ import annotations

from pathlib import Path

from ragmeshd.runtime.auth import DEFAULT_KEY_NAME, api_key_interceptor
from ragmeshd.runtime.keystore import KeyStore
from ragmeshd.state import MeshLayout


def test_a_server_with_a_brought_store_and_no_admin_key_starts_and_makes_none(
    tmp_path: Path,
) -> None:
    keys = MeshLayout(tmp_path).keys_dir
    store = KeyStore(keys)
    store.ensure_named_key("service-search")
    (keys / ".lock").unlink()  # a Secret's files only: keys.json and the pod's own key
    before = sorted(p.name for p in keys.iterdir())
    assert before == ["keys.json", "service-search.key"]
    assert api_key_interceptor(tmp_path, required=True) is not None
    assert sorted(p.name for p in keys.iterdir()) == before


def test_a_first_start_still_makes_the_admin_key(tmp_path: Path) -> None:
    assert api_key_interceptor(tmp_path, required=True) is not None
    assert (MeshLayout(tmp_path).keys_dir / f"{DEFAULT_KEY_NAME}.key").exists()
