"""API keys on every RPC of every service, called directly (no Envoy)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from ragmeshd.runtime.auth import KeyStore
from ragmeshd.runtime.channels import metadata_interceptors
from tests.helpers import (
    call_every_rpc,
    eventually_async,
    free_port,
    ragmesh_command,
    running_process,
)

pytestmark = pytest.mark.integration


async def test_every_rpc_needs_a_valid_unrevoked_key(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = {
        "RAGMESH_STATE_DIR": str(state_dir),
        "RAGMESH_SERVER__REQUIRE_API_KEY": "true",
        "RAGMESH_SEARCH__BACKEND": "qdrant",
        "RAGMESH_EMBEDDINGS__METRICS_LISTEN": "",
        "RAGMESH_SEARCH__METRICS_LISTEN": "",
        "RAGMESH_COORDINATOR__METRICS_LISTEN": "",
    }
    targets = {name: f"127.0.0.1:{free_port()}" for name in ("embeddings", "search", "coordinator")}
    with (
        running_process(
            ragmesh_command("serve", "embeddings", "--listen", targets["embeddings"]),
            tmp_path / "embeddings.log",
            env=env,
        ),
        running_process(
            ragmesh_command("serve", "search", "--listen", targets["search"]),
            tmp_path / "search.log",
            env=env,
        ),
        running_process(
            ragmesh_command("serve", "coordinator", "--listen", targets["coordinator"]),
            tmp_path / "coordinator.log",
            env=env,
        ),
    ):
        store = KeyStore(state_dir / "keys")
        await eventually_async(store.path.exists, 60, "a server makes the key store")
        good_key = store.create("test-client")
        revoked_key = store.create("leaver")
        revoked_id = revoked_key.split("_")[1]
        store.revoke(revoked_id)
        wrong_secret = good_key[:-4] + ("AAAA" if not good_key.endswith("AAAA") else "BBBB")

        for name, target in targets.items():
            for key in (None, revoked_key, wrong_secret, "not-a-key"):
                interceptors = metadata_interceptors(key) if key else []
                async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
                    await channel.channel_ready()
                    codes = await call_every_rpc(channel, f"ragmesh.{name}.")
                assert codes, name
                assert set(codes.values()) == {"UNAUTHENTICATED"}, (name, key, codes)

            # With a valid key the calls get past authentication (whatever they answer).
            async with grpc.aio.insecure_channel(
                target, interceptors=metadata_interceptors(good_key)
            ) as channel:
                codes = await call_every_rpc(channel, f"ragmesh.{name}.")
            assert "UNAUTHENTICATED" not in codes.values(), (name, codes)
