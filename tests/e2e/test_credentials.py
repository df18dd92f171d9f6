"""One credential per request, through Envoy on every surface (issue 23): the decoy-header
bypass of a rate limit is refused on gRPC, HTTP/JSON and the OpenAI routes, and so is every
other form but the two accepted; a limited key's first call within its burst passes."""

from __future__ import annotations

import asyncio
import os
import subprocess

import grpc
import httpx
import pytest

from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmeshd.runtime.credentials import ACCEPTED_FORMS
from tests.helpers import REPO_ROOT, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

RELOAD_WAIT_S = 1.5  # servers and the rate-limit service re-read the key store within a second
DECOY = ("authorization", "Basic eDp5")


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


async def embed(mesh: Mesh, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    async with grpc.aio.secure_channel(mesh.endpoint, mesh.client_credentials()) as channel:
        stub = embeddings_grpc.EmbeddingsServiceStub(channel)
        try:
            await stub.Embed(
                embeddings_pb.EmbedRequest(inputs=["decoy"]), metadata=metadata, timeout=30
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() != grpc.StatusCode.UNAUTHENTICATED or ACCEPTED_FORMS in (
                error.details() or ""
            ), error.details()
            return error.code()
    return grpc.StatusCode.OK


async def test_the_decoy_header_is_refused_on_grpc_and_a_first_call_passes(mesh: Mesh) -> None:
    key = limited_key(mesh, "decoy-grpc")
    await asyncio.sleep(RELOAD_WAIT_S)
    for _ in range(3):
        assert await embed(mesh, [("x-api-key", key), DECOY]) == grpc.StatusCode.UNAUTHENTICATED
    # None of those spent the key's one-call burst; its first real call passes, the next not.
    assert await embed(mesh, [("x-api-key", key)]) == grpc.StatusCode.OK
    assert await embed(mesh, [("x-api-key", key)]) == grpc.StatusCode.RESOURCE_EXHAUSTED


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
    assert await embed(mesh, metadata) == grpc.StatusCode.UNAUTHENTICATED


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
