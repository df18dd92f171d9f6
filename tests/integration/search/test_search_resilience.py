"""The search service when its dependencies fail: the database restarting under it, and the
embeddings service being down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd.postgres.embedded import EmbeddedPostgres
from ragmeshd.search.server import SERVICE_NAME
from tests.helpers import ServerProcess, free_port, wait_postgres, wait_serving
from tests.integration.search.conftest import start_postgres, start_search

pytestmark = pytest.mark.integration


async def health(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2
        )
        return int(response.status)


async def wait_health(target: str, status: int, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await health(target) == status:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"health never became {status}")


async def test_search_survives_the_database_restarting(
    tmp_path: Path, embeddings_server: ServerProcess
) -> None:
    state_dir = tmp_path / "s"
    dsn = EmbeddedPostgres(state_dir).dsn()
    env = {"RAGMESH_STATE_DIR": str(state_dir)}
    with start_postgres(state_dir, tmp_path / "postgres-1.log") as postgres:
        wait_postgres(dsn, postgres)
        with start_search(
            tmp_path / "search.log", "--embeddings-target", embeddings_server.target, env=env
        ) as search:
            wait_serving(search.target, SERVICE_NAME, search)
            client = pb_grpc.SearchServiceStub(grpc.aio.insecure_channel(search.target))
            await client.CreateCollection(pb.CreateCollectionRequest(name="c", dimensions=3))
            await client.UpsertDocuments(
                pb.UpsertDocumentsRequest(
                    collection="c", documents=[pb.Document(id="a", text="t", vector=[1, 0, 0])]
                )
            )
            query = pb.SearchRequest(
                collection="c", query_vector=[1, 0, 0], mode=pb.SEARCH_MODE_DENSE
            )
            assert len((await client.Search(query)).hits) == 1

            assert postgres.stop() == 0
            await wait_health(search.target, health_pb2.HealthCheckResponse.NOT_SERVING, 10)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.Search(query, timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "pgvector store is not answering" in (raised.value.details() or "")

            with start_postgres(state_dir, tmp_path / "postgres-2.log") as restarted:
                wait_postgres(dsn, restarted)
                await wait_health(search.target, health_pb2.HealthCheckResponse.SERVING, 15)
                assert [h.document_id for h in (await client.Search(query)).hits] == ["a"]
                assert search.popen.poll() is None
    log = search.log()
    assert "store not answering" in log and "store answering again" in log


async def test_embeddings_down_fails_fast_with_unavailable(tmp_path: Path) -> None:
    """Nothing listens at the embeddings target: calls that need it answer UNAVAILABLE (one
    attempt each: retries are Envoy's), and once the breaker opens, at once; calls that don't
    need it work."""
    env = {
        "RAGMESH_STATE_DIR": str(tmp_path),
        "RAGMESH_SEARCH__EMBED_BREAKER_FAILURES": "2",
        "RAGMESH_SEARCH__EMBED_BREAKER_RECOVERY_S": "60",
    }
    dead_target = f"127.0.0.1:{free_port()}"
    with start_search(
        tmp_path / "search.log", "--backend", "qdrant", "--embeddings-target", dead_target, env=env
    ) as search:
        wait_serving(search.target, SERVICE_NAME, search)
        client = pb_grpc.SearchServiceStub(grpc.aio.insecure_channel(search.target))
        await client.CreateCollection(pb.CreateCollectionRequest(name="c", dimensions=384))
        request = pb.UpsertDocumentsRequest(
            collection="c", documents=[pb.Document(id="a", text="needs embedding")]
        )
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.UpsertDocuments(request, timeout=30)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert dead_target in (raised.value.details() or "")
        # The open breaker answers without dialling the dead target (its message says so),
        # so this is fast by construction; the time it took is not asserted.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.Search(pb.SearchRequest(collection="c", query="anything"), timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "circuit breaker open" in (raised.value.details() or "")
        # Precomputed vectors and keyword search need no embeddings.
        await client.UpsertDocuments(
            pb.UpsertDocumentsRequest(
                collection="c",
                documents=[pb.Document(id="v", text="vector given", vector=[1.0] * 384)],
            )
        )
        keyword = await client.Search(
            pb.SearchRequest(collection="c", query="vector", mode=pb.SEARCH_MODE_KEYWORD)
        )
        assert [hit.document_id for hit in keyword.hits] == ["v"]
    assert "retrying" not in search.log()
