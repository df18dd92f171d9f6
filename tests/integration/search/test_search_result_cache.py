"""The search result cache across two replicas on one PostgreSQL: a repeated Search is
answered from the cache, and any write through one replica (upsert, delete, drop) is seen
by the very next Search on the other."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from tests.helpers import ServerProcess, expect_error, free_port
from tests.integration.search.conftest import PostgresProcess, _serve
from tests.integration.search.test_search_contract import new_collection

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replica_b(
    session_tmp: Path, postgres_server: PostgresProcess, embeddings_server: ServerProcess
) -> Iterator[tuple[ServerProcess, str]]:
    """A second pgvector replica on the same database, with its metrics served."""
    metrics = f"127.0.0.1:{free_port()}"
    env = {
        "RAGMESH_STATE_DIR": str(postgres_server.state_dir),
        "RAGMESH_SEARCH__METRICS_LISTEN": metrics,
    }
    for server in _serve(session_tmp / "search-replica-b.log", embeddings_server, env=env):
        yield server, metrics


def cache_hits(metrics: str) -> float:
    text = httpx.get(f"http://{metrics}/metrics", timeout=5).text
    match = re.search(r'^ragmesh_cache_hits_total\{cache="search_results"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_writes_on_one_replica_are_seen_at_once_on_the_other(
    search_pgvector: ServerProcess, replica_b: tuple[ServerProcess, str]
) -> None:
    server_b, metrics_b = replica_b
    async with (
        grpc.aio.insecure_channel(search_pgvector.target) as channel_a,
        grpc.aio.insecure_channel(server_b.target) as channel_b,
    ):
        a, b = pb_grpc.SearchServiceStub(channel_a), pb_grpc.SearchServiceStub(channel_b)
        name = await new_collection(a)
        query = pb.SearchRequest(
            collection=name, query="how do cells make energy?", top_k=5, mode=pb.SEARCH_MODE_DENSE
        )

        async def ids() -> list[str]:
            return [hit.document_id for hit in (await b.Search(query)).hits]

        def document(id_: str, text: str) -> pb.Document:
            return pb.Document(id=id_, text=text)

        await a.UpsertDocuments(
            pb.UpsertDocumentsRequest(
                collection=name, documents=[document("cells", "Cells make energy in mitochondria.")]
            )
        )
        hits_before = cache_hits(metrics_b)
        assert await ids() == ["cells"]
        assert await ids() == ["cells"]
        assert cache_hits(metrics_b) == hits_before + 1  # the repeat came from the cache

        await a.UpsertDocuments(
            pb.UpsertDocumentsRequest(
                collection=name, documents=[document("atp", "Cells make their energy as ATP.")]
            )
        )
        assert sorted(await ids()) == ["atp", "cells"]

        await a.UpsertDocuments(
            pb.UpsertDocumentsRequest(
                collection=name, documents=[document("cells", "Envoy retries gRPC calls.")]
            )
        )
        assert (await b.Search(query)).hits[0].document_id == "atp"  # the rewrite is seen, too

        await a.DeleteDocuments(pb.DeleteDocumentsRequest(collection=name, ids=["atp"]))
        assert await ids() == ["cells"]

        await a.DeleteCollection(pb.DeleteCollectionRequest(name=name))
        await expect_error(b.Search(query), grpc.StatusCode.NOT_FOUND)
        await a.CreateCollection(pb.CreateCollectionRequest(name=name))
        assert await ids() == []
