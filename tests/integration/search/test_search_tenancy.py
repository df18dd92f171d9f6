"""Tenancy inside the search service, on real pgvector and Qdrant (issue 24): what a key of
tenant A tries against tenant B's collection, and what a key outside a document's groups
tries against it. The servicer runs in-process with the principal the auth interceptor would
set (runtime/tenancy.py); the queries carry vectors, so no embeddings service is needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import pytest

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.models import packaged_model_path
from ragmeshd.postgres.embedded import EmbeddedPostgres
from ragmeshd.runtime.errors import RpcFailure
from ragmeshd.runtime.keystore import StoredKey
from ragmeshd.runtime.tenancy import Principal, set_current
from ragmeshd.search.backends.base import SearchBackend
from ragmeshd.search.backends.pgvector import PgVectorBackend
from ragmeshd.search.backends.qdrant import QdrantBackend
from ragmeshd.search.chunking import PassageSplitter, load_tokenizer
from ragmeshd.search.embedder import Embedder
from ragmeshd.search.result_cache import ResultCache
from ragmeshd.search.servicer import SearchServicer
from ragmeshd.settings import SearchSettings, ServerSettings
from tests.integration.search.conftest import PostgresProcess, create_database

pytestmark = pytest.mark.integration

DIMENSIONS = 8
MODES = [pb.SEARCH_MODE_DENSE, pb.SEARCH_MODE_KEYWORD, pb.SEARCH_MODE_HYBRID]
TOP_K = 5


class _Context:
    """What the servicer asks of a call's context."""

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()  # no key presented: the work meter charges nobody


def _principal(key_id: str, **fields: Any) -> Principal:
    return StoredKey(key_id, key_id, "0", 0.0, **fields).principal()


TENANT_A = _principal("aaaaaaaaaaaa", collections=("team-a-*",))
FINANCE_A = _principal("aaaaaaaaaaab", collections=("team-a-*",), groups=("finance",))
ADMIN = _principal("adadadadadad", scopes=("admin",))


@pytest.fixture(params=["pgvector", "qdrant"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresProcess
) -> AsyncIterator[SearchBackend]:
    # Qdrant's default engine (qdrant-edge-py) in this test's folder.
    settings = SearchSettings(
        pg_pool_min_size=1, pg_pool_max_size=2, qdrant_location=f"edge:{tmp_path / 'qdrant'}"
    )
    store: SearchBackend
    if request.param == "pgvector":
        create_database(postgres_server.dsn, "tenancy")
        store = PgVectorBackend(
            EmbeddedPostgres(postgres_server.state_dir).dsn(database="tenancy"), settings
        )
    else:
        store = QdrantBackend(settings)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def _servicer(backend: SearchBackend, results: ResultCache | None = None) -> SearchServicer:
    settings = SearchSettings()
    servicer = SearchServicer(settings, ServerSettings(), backend, cast(Embedder, None), results)
    tokenizer = load_tokenizer(packaged_model_path())
    servicer.attach(
        PassageSplitter(
            tokenizer,
            max_tokens=settings.passage_max_tokens,
            overlap_tokens=settings.passage_overlap_tokens,
            max_chars=settings.passage_max_chars,
        )
    )
    return servicer


def _document(
    document_id: str, text: str, vector: np.ndarray, acl: str | None = None
) -> pb.Document:
    document = pb.Document(id=document_id, text=text, vector=vector.tolist())
    if acl is not None:
        document.metadata["acl"].string_value = acl
    return document


async def _fill(servicer: SearchServicer) -> np.ndarray:
    """team-a-docs: 10 finance-only documents that match the query best, 10 open ones;
    team-b-docs: tenant B's secret. Returns the query vector."""
    set_current(ADMIN)
    context = cast(grpc.aio.ServicerContext, _Context())
    rng = np.random.default_rng(24)
    query = rng.normal(size=DIMENSIONS).astype(np.float32)
    query /= np.linalg.norm(query)
    for name in ("team-a-docs", "team-b-docs"):
        await servicer.CreateCollection(
            pb.CreateCollectionRequest(name=name, dimensions=DIMENSIONS), context
        )
    documents = []
    for i in range(20):
        noise = rng.normal(size=DIMENSIONS).astype(np.float32) * (0.05 if i < 10 else 0.6)
        vector = query + noise
        restricted = i < 10
        text = f"quarterly payroll budget {'salaries ' * (3 if restricted else 1)}note {i}"
        documents.append(
            _document(f"doc-{i:02d}", text, vector, "finance,board" if restricted else None)
        )
    await servicer.UpsertDocuments(
        pb.UpsertDocumentsRequest(collection="team-a-docs", documents=documents), context
    )
    await servicer.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            collection="team-b-docs",
            documents=[_document("secret", "quarterly payroll budget of team b", query)],
        ),
        context,
    )
    return query


async def _search(
    servicer: SearchServicer, collection: str, query: np.ndarray, mode: int
) -> list[str]:
    request = pb.SearchRequest(
        collection=collection,
        query="payroll salaries",
        top_k=TOP_K,
        mode=cast(Any, mode),
        query_vector=[] if mode == pb.SEARCH_MODE_KEYWORD else query.tolist(),
    )
    context = cast(grpc.aio.ServicerContext, _Context())
    response = await servicer.Search(request, context)
    return [hit.document_id for hit in response.hits]


async def test_tenant_a_never_reaches_tenant_bs_collection(backend: SearchBackend) -> None:
    servicer = _servicer(backend)
    query = await _fill(servicer)
    context = cast(grpc.aio.ServicerContext, _Context())
    set_current(TENANT_A)
    listed = await servicer.ListCollections(pb.ListCollectionsRequest(), context)
    assert [c.name for c in listed.collections] == ["team-a-docs"]
    attempts = [
        servicer.Search(pb.SearchRequest(collection="team-b-docs", query="payroll"), context),
        servicer.ListDocuments(pb.ListDocumentsRequest(collection="team-b-docs"), context),
        servicer.GetDocument(pb.GetDocumentRequest(collection="team-b-docs", id="secret"), context),
        servicer.CountDocuments(pb.CountDocumentsRequest(collection="team-b-docs"), context),
        servicer.GetCollection(pb.GetCollectionRequest(name="team-b-docs"), context),
        servicer.UpsertDocuments(
            pb.UpsertDocumentsRequest(
                collection="team-b-docs", documents=[_document("planted", "x", query)]
            ),
            context,
        ),
        servicer.DeleteDocuments(
            pb.DeleteDocumentsRequest(collection="team-b-docs", ids=["secret"]), context
        ),
        servicer.CreateCollection(
            pb.CreateCollectionRequest(name="team-b-more", dimensions=DIMENSIONS), context
        ),
    ]
    for attempt in attempts:
        with pytest.raises(RpcFailure) as refused:
            await attempt
        assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert "team-b-" in refused.value.details
    for mode in MODES:
        assert "secret" not in await _search(servicer, "team-a-docs", query, mode)


async def test_group_documents_never_reach_outsiders_and_top_k_stays_full(
    backend: SearchBackend,
) -> None:
    servicer = _servicer(backend)
    query = await _fill(servicer)
    context = cast(grpc.aio.ServicerContext, _Context())
    restricted = {f"doc-{i:02d}" for i in range(10)}
    for mode in MODES:
        set_current(TENANT_A)
        outsider = await _search(servicer, "team-a-docs", query, mode)
        # Filtered inside the query: the best matches are all restricted, yet top-k is full.
        assert len(outsider) == TOP_K and not restricted & set(outsider), mode
        set_current(FINANCE_A)
        insider = await _search(servicer, "team-a-docs", query, mode)
        assert len(insider) == TOP_K and set(insider) <= restricted, mode
    set_current(TENANT_A)
    listed = await servicer.ListDocuments(
        pb.ListDocumentsRequest(collection="team-a-docs", page_size=100), context
    )
    assert not restricted & {d.id for d in listed.documents}
    counted = await servicer.CountDocuments(
        pb.CountDocumentsRequest(collection="team-a-docs"), context
    )
    assert counted.document_count == 10
    with pytest.raises(RpcFailure) as hidden:
        await servicer.GetDocument(
            pb.GetDocumentRequest(collection="team-a-docs", id="doc-00"), context
        )
    assert hidden.value.code is grpc.StatusCode.NOT_FOUND


async def test_an_acl_must_name_groups(backend: SearchBackend) -> None:
    servicer = _servicer(backend)
    query = await _fill(servicer)
    context = cast(grpc.aio.ServicerContext, _Context())
    for bad in ("", "fin ance", ",,"):
        with pytest.raises(RpcFailure) as refused:
            await servicer.UpsertDocuments(
                pb.UpsertDocumentsRequest(
                    collection="team-a-docs", documents=[_document("x", "x", query, bad)]
                ),
                context,
            )
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_cached_result_is_never_served_to_a_key_that_may_see_less(
    postgres_server: PostgresProcess,
) -> None:
    create_database(postgres_server.dsn, "tenancy_cache")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="tenancy_cache")
    backend = PgVectorBackend(dsn, SearchSettings(pg_pool_min_size=1, pg_pool_max_size=2))
    await backend.start()
    results = ResultCache(dsn, max_bytes=1 << 20, ttl_s=600)
    await results.start()
    try:
        assert results.enabled
        servicer = _servicer(backend, results)
        query = await _fill(servicer)
        restricted = {f"doc-{i:02d}" for i in range(10)}
        set_current(FINANCE_A)
        first = await _search(servicer, "team-a-docs", query, pb.SEARCH_MODE_DENSE)
        assert set(first) <= restricted
        cached = len(results.memory)
        set_current(TENANT_A)  # the same request, a key outside finance
        second = await _search(servicer, "team-a-docs", query, pb.SEARCH_MODE_DENSE)
        assert len(second) == TOP_K and not restricted & set(second)
        assert len(results.memory) == cached + 1  # its own entry, not the other key's
    finally:
        await results.close()
        await backend.close()
