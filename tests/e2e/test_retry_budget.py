"""One retry layer: an Ask while embeddings refuses everything reaches embeddings a bounded
number of times (before issue 9 the layers multiplied: up to ~108 Embed attempts), and is
answered at once rather than after its deadline.

Embeddings is made to refuse for real: EmbedStream calls through Envoy fill every replica's
concurrency limit (the shared mesh runs with server.max_concurrent_rpcs = 32, tests/conftest.py),
so each Embed gets RESOURCE_EXHAUSTED from the admission check. Attempts are counted where they
arrive, in the embeddings replicas' own metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from tests.conftest import SHARED_MESH_MAX_CONCURRENT_RPCS
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

MAX_EMBED_ATTEMPTS_PER_ASK = 3


def embed_attempts(mesh: Mesh) -> float:
    """Embed calls the embeddings replicas have handled, whatever their answer."""
    total = 0.0
    for replica in mesh.state.replicas:
        if replica.service != "embeddings":
            continue
        with urllib.request.urlopen(f"http://{replica.metrics_listen}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("grpc_server_handled_total{") and 'grpc_method="Embed"' in line:
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def _idle_messages(release: asyncio.Event) -> AsyncIterator[embeddings_pb.EmbedStreamRequest]:
    await release.wait()
    return
    yield  # an async generator that sends nothing until released


async def test_an_ask_reaches_a_refusing_embeddings_service_at_most_three_times(
    mesh: Mesh,
) -> None:
    replicas = sum(1 for r in mesh.state.replicas if r.service == "embeddings")
    async with mesh.channel() as channel:
        search = search_grpc.SearchServiceStub(channel)
        await search.CreateCollection(search_pb.CreateCollectionRequest(name="retry-budget"))
        await search.UpsertDocuments(
            search_pb.UpsertDocumentsRequest(
                collection="retry-budget",
                documents=[search_pb.Document(id="1", text="Envoy retries on another replica.")],
            )
        )
        embeddings = embeddings_grpc.EmbeddingsServiceStub(channel)

        # Fill every embeddings replica's concurrency limit with streams that send nothing,
        # until Embed calls are refused every time.
        release = asyncio.Event()

        async def hold() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for _ in embeddings.EmbedStream(_idle_messages(release), timeout=60):
                    pass

        holders: list[asyncio.Future[None]] = []
        try:
            refused = None
            deadline = time.monotonic() + 30
            while refused is None and time.monotonic() < deadline:
                more = replicas * SHARED_MESH_MAX_CONCURRENT_RPCS if not holders else 8
                holders += [asyncio.ensure_future(hold()) for _ in range(more)]
                await asyncio.sleep(0.5)
                refused = await _refused_every_time(embeddings, probes=6)
            assert refused is not None, "embeddings kept accepting calls"
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.details()

            before = embed_attempts(mesh)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                ask = coordinator_grpc.CoordinatorServiceStub(channel).Ask(
                    coordinator_pb.AskRequest(
                        query="what does envoy retry?", collections=["retry-budget"]
                    ),
                    timeout=30,
                )
                async for _ in ask:
                    pass
            took_s = time.monotonic() - started
            attempts = embed_attempts(mesh) - before
        finally:
            release.set()
            await asyncio.gather(*holders)

    print(f"Ask answered {failed.value.code().name} in {took_s:.3f} s after {attempts:g} Embed")
    assert failed.value.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ), failed.value.details()
    assert 1 <= attempts <= MAX_EMBED_ATTEMPTS_PER_ASK
    assert took_s < 10  # refused at once, not after the 30 s deadline


async def _refused_every_time(
    embeddings: embeddings_grpc.EmbeddingsServiceStub, probes: int
) -> grpc.aio.AioRpcError | None:
    """The last refusal if `probes` Embed calls in a row were refused, else None."""
    refusal = None
    for _ in range(probes):
        try:
            await embeddings.Embed(embeddings_pb.EmbedRequest(inputs=["probe"]), timeout=10)
        except grpc.aio.AioRpcError as exc:
            refusal = exc
            continue
        return None
    return refusal
