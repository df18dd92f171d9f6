"""One credential per request, through Envoy on every surface (issue 23): the decoy-header
bypass of a rate limit is refused on gRPC, HTTP/JSON and the OpenAI routes, and so is every
other form but the two accepted; a limited key's first call within its burst passes."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess

import grpc
import httpx
import pytest

from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmeshd.runtime.credentials import ACCEPTED_FORMS
from tests.helpers import REPO_ROOT, eventually_async, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

RELOAD_WAIT_S = 1.5  # servers and the rate-limit service re-read the key store within a second
DECOY = ("authorization", "Basic eDp5")


def secret_of(key: str) -> str:
    """A key's secret: what follows its prefix and id (rmkl_<id>_<secret>). The secret is
    URL-safe base64 and may itself hold "_"."""
    return key.split("_", 2)[2]


def limited_key(mesh: Mesh, name: str) -> str:
    created = subprocess.run(
        ragmesh_command(
            "keys", "create", name, "--scopes", "embed", "--rate", "1/m", "--burst", "1"
        ),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        timeout=60,
        check=True,
    )
    return created.stdout.strip()


async def embed(mesh: Mesh, metadata: list[tuple[str, str]]) -> tuple[grpc.StatusCode, str]:
    async with grpc.aio.secure_channel(mesh.endpoint, mesh.client_credentials()) as channel:
        stub = embeddings_grpc.EmbeddingsServiceStub(channel)
        try:
            await stub.Embed(
                embeddings_pb.EmbedRequest(inputs=["decoy"]), metadata=metadata, timeout=30
            )
        except grpc.aio.AioRpcError as error:
            return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def embed_code(mesh: Mesh, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    return (await embed(mesh, metadata))[0]


async def refused_for_its_form(mesh: Mesh, metadata: list[tuple[str, str]]) -> bool:
    code, details = await embed(mesh, metadata)
    return code == grpc.StatusCode.UNAUTHENTICATED and ACCEPTED_FORMS in details


async def test_the_decoy_header_is_refused_on_grpc_and_a_first_call_passes(mesh: Mesh) -> None:
    key = limited_key(mesh, "decoy-grpc")
    await asyncio.sleep(RELOAD_WAIT_S)
    for _ in range(3):
        assert await refused_for_its_form(mesh, [("x-api-key", key), DECOY])
    # None of those spent the key's one-call burst; its first real call passes, the next not.
    assert await embed_code(mesh, [("x-api-key", key)]) == grpc.StatusCode.OK
    assert await embed_code(mesh, [("x-api-key", key)]) == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    "headers",
    [
        [("authorization", "Bearer {key}"), ("x-api-key", "{key}")],
        [("authorization", "Bearer {key}"), ("authorization", "Bearer {key}")],
        [("authorization", "Basic eDp5")],
        [("authorization", "Bearer  {key}")],
        [("x-api-key", " {key}")],
    ],
)
async def test_every_other_form_is_unauthenticated_on_grpc(
    mesh: Mesh, headers: list[tuple[str, str]]
) -> None:
    metadata = [(name, value.format(key=mesh.api_key)) for name, value in headers]
    assert await refused_for_its_form(mesh, metadata)


def http_post(mesh: Mesh, path: str, body: dict[str, object], headers: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=mesh.base_url, verify=mesh.ssl_context(), timeout=30) as client:
        return client.post(path, json=body, headers=httpx.Headers(headers))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings:embed", {"inputs": ["decoy"]}),
        ("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "decoy"}),
    ],
    ids=["http-json", "openai"],
)
async def test_the_decoy_header_is_refused_over_http(
    mesh: Mesh, path: str, body: dict[str, object]
) -> None:
    key = limited_key(mesh, f"decoy-{path.count(':')}")
    await asyncio.sleep(RELOAD_WAIT_S)
    for _ in range(3):
        refused = await asyncio.to_thread(http_post, mesh, path, body, [("x-api-key", key), DECOY])
        assert refused.status_code == 401, refused.text
        assert "exactly one of" in refused.text
    first = await asyncio.to_thread(http_post, mesh, path, body, [("x-api-key", key)])
    assert first.status_code == 200, first.text
    second = await asyncio.to_thread(http_post, mesh, path, body, [("x-api-key", key)])
    assert second.status_code == 429, second.text


async def test_refusals_and_key_changes_reach_the_audit_log(mesh: Mesh) -> None:
    """STATE_DIR/logs/audit.log, a JSON stream of its own: a refused call with its reason, key
    id and peer; a key created, rotated away and revoked; never a key's secret."""
    key = limited_key(mesh, "audited")
    key_id = key.split("_")[1]
    await asyncio.sleep(RELOAD_WAIT_S)
    forged = key.removesuffix(secret_of(key)) + "A" * 43
    assert await embed_code(mesh, [("x-api-key", forged)]) == grpc.StatusCode.UNAUTHENTICATED
    revoked = await asyncio.to_thread(
        subprocess.run,
        ragmesh_command("keys", "revoke", key_id),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr
    audit_log = mesh.state_dir / "logs" / "audit.log"

    def events() -> list[dict[str, object]]:
        return [json.loads(line) for line in audit_log.read_text().splitlines() if line]

    deadline = asyncio.get_running_loop().time() + 10
    while True:
        mine = [e for e in events() if e.get("key_id") == key_id]
        kinds = {e["event"] for e in mine}
        if {"key created", "call refused", "key revoked"} <= kinds:
            break
        assert asyncio.get_running_loop().time() < deadline, kinds
        await asyncio.sleep(0.2)
    refusal = next(e for e in mine if e["event"] == "call refused")
    assert refusal["grpc_code"] == "UNAUTHENTICATED" and refusal["peer"]
    assert refusal["reason"]
    assert secret_of(key) not in audit_log.read_text()
    assert all(e["logger"] == "ragmesh.audit" for e in events())


async def test_envoys_own_refusals_reach_its_audit_file(mesh: Mesh) -> None:
    """Calls Envoy refuses itself never reach a server's audit.log: Envoy appends them to
    STATE_DIR/logs/envoy-audit.log beside it, one JSON line each with the reason, the key's id
    (when the refusal comes after the credential check) and the client certificate's identity."""
    key = limited_key(mesh, "envoy-audited")
    key_id = key.split("_")[1]
    await asyncio.sleep(RELOAD_WAIT_S)
    assert await refused_for_its_form(mesh, [("x-api-key", key), DECOY])
    assert await embed_code(mesh, [("x-api-key", key)]) == grpc.StatusCode.OK
    assert await embed_code(mesh, [("x-api-key", key)]) == grpc.StatusCode.RESOURCE_EXHAUSTED
    envoy_audit = mesh.state_dir / "logs" / "envoy-audit.log"

    def refusals() -> list[dict[str, object]]:
        text = envoy_audit.read_text() if envoy_audit.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line]

    def over_limit() -> list[dict[str, object]]:
        return [e for e in refusals() if e["key_id"] == key_id]

    def two_credentials() -> list[dict[str, object]]:
        return [e for e in refusals() if str(e["reason"]).startswith("more than one credential")]

    # Envoy flushes its access logs about once a second.
    await eventually_async(lambda: over_limit() and two_credentials(), 30, "Envoy's refusals")
    (limited,) = over_limit()
    assert limited["reason"] == "over its rate limit"
    assert limited["grpc_code"] == "RESOURCE_EXHAUSTED"
    assert limited["grpc_method"] == "/ragmesh.embeddings.v1.EmbeddingsService/Embed"
    assert str(limited["peer"]).startswith("spiffe://ragmesh.internal/client/")
    decoy = two_credentials()[-1]
    assert decoy["grpc_code"] == "UNAUTHENTICATED" and decoy["peer"] == limited["peer"]
    assert all(e["event"] == "call refused" and e["audit"] is True for e in refusals())
    assert secret_of(key) not in envoy_audit.read_text()
    assert stat.S_IMODE(envoy_audit.stat().st_mode) == 0o600


def key_with_rate(mesh: Mesh, name: str, rate: str, burst: int) -> str:
    created = subprocess.run(
        ragmesh_command(
            "keys", "create", name, "--scopes", "embed", "--rate", rate, "--burst", str(burst)
        ),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        timeout=60,
        check=True,
    )
    return created.stdout.strip()


async def test_a_keys_limit_counts_texts_not_calls(mesh: Mesh) -> None:
    """Issue 23: one Embed of many texts or one long EmbedStream cost one token each before;
    now every text is a unit, and a stream stops at the message its key cannot pay for."""
    key = key_with_rate(mesh, "texts", "1/m", 10)
    await asyncio.sleep(RELOAD_WAIT_S)
    async with grpc.aio.secure_channel(mesh.endpoint, mesh.client_credentials()) as channel:
        stub = embeddings_grpc.EmbeddingsServiceStub(channel)
        metadata = [("x-api-key", key)]
        await stub.Embed(
            embeddings_pb.EmbedRequest(inputs=[f"t{i}" for i in range(6)]),
            metadata=metadata,
            timeout=30,
        )
        with pytest.raises(grpc.aio.AioRpcError) as too_many:
            await stub.Embed(
                embeddings_pb.EmbedRequest(inputs=[f"u{i}" for i in range(6)]),
                metadata=metadata,
                timeout=30,
            )
        assert too_many.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit is spent (6 texts" in (too_many.value.details() or "")

    stream_key = key_with_rate(mesh, "stream", "1/m", 10)
    await asyncio.sleep(RELOAD_WAIT_S)
    answered = 0
    async with grpc.aio.secure_channel(mesh.endpoint, mesh.client_credentials()) as channel:
        stub = embeddings_grpc.EmbeddingsServiceStub(channel)
        messages = (
            embeddings_pb.EmbedStreamRequest(sequence=i, inputs=[f"s{i}a", f"s{i}b", f"s{i}c"])
            for i in range(10)
        )
        with pytest.raises(grpc.aio.AioRpcError) as stopped:
            async for _ in stub.EmbedStream(
                messages, metadata=[("x-api-key", stream_key)], timeout=60
            ):
                answered += 1
    assert stopped.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert answered == 3  # 10 units pay for three messages of three texts
