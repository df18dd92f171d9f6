"""A CANCELLED status that did not come from our own caller (Envoy or a dying connection
cancelled the call on the way) reaches the service's callers as UNAVAILABLE, not as an
unhandled error (which a client would see as INTERNAL), and is not a breaker failure.

The peer is a real gRPC server that answers CANCELLED, as Envoy does when it resets a
stream whose upstream vanished."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from ragmeshd.coordinator.search_client import SearchClient, SearchUnavailableError
from ragmeshd.runtime.resilience import BreakerState, CircuitBreaker
from ragmeshd.search.embedder import Embedder, EmbeddingsUnavailableError
from ragmeshd.settings import SearchSettings


class CancellingEmbeddings(embeddings_grpc.EmbeddingsServiceServicer):
    async def Embed(
        self, request: embeddings_pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embeddings_pb.EmbedResponse:
        await context.abort(grpc.StatusCode.CANCELLED, "stream reset on the way")
        raise AssertionError("abort returns by raising")


class CancellingSearch(search_grpc.SearchServiceServicer):
    async def ListCollections(
        self, request: search_pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb.ListCollectionsResponse:
        await context.abort(grpc.StatusCode.CANCELLED, "stream reset on the way")
        raise AssertionError("abort returns by raising")


@pytest.fixture
async def peer() -> AsyncIterator[str]:
    server = grpc.aio.server()
    embeddings_grpc.add_EmbeddingsServiceServicer_to_server(CancellingEmbeddings(), server)
    search_grpc.add_SearchServiceServicer_to_server(CancellingSearch(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_search_hears_unavailable_from_embeddings(peer: str) -> None:
    # One failure would open the breaker: it must stay closed.
    embedder = Embedder(peer, SearchSettings(embed_breaker_failures=1))
    try:
        with pytest.raises(EmbeddingsUnavailableError, match="cancelled on the way"):
            await embedder.embed(["a text"], timeout_s=5)
        assert embedder.breaker.state is BreakerState.CLOSED
    finally:
        await embedder.close()


async def test_the_coordinator_hears_unavailable_from_search(peer: str) -> None:
    breaker = CircuitBreaker("search", failure_threshold=1, recovery_s=5)
    client = SearchClient(peer, timeout_s=5, breaker=breaker)
    try:
        with pytest.raises(SearchUnavailableError, match="cancelled on the way"):
            await client.list_collections()
        assert breaker.state is BreakerState.CLOSED
    finally:
        await client.close()
