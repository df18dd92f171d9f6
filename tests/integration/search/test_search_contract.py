"""The search service's contract, run against every backend: pgvector on the embedded
PostgreSQL, Qdrant as configured by default (its own engine in-process under the state
folder, qdrant-edge-py), qdrant-client's local mode (`:memory:`), and pgvector through an
explicit DSN. Behaviour and status codes must be the same."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from tests.helpers import ServerProcess, expect_error

pytestmark = pytest.mark.integration

DIMENSIONS = 384
MODES = [pb.SEARCH_MODE_DENSE, pb.SEARCH_MODE_KEYWORD, pb.SEARCH_MODE_HYBRID]


def stub(server: ServerProcess) -> pb_grpc.SearchServiceStub:
    return pb_grpc.SearchServiceStub(grpc.aio.insecure_channel(server.target))


def s(value: str) -> pb.MetadataValue:
    return pb.MetadataValue(string_value=value)


def n(value: float) -> pb.MetadataValue:
    return pb.MetadataValue(number_value=value)


def unique_name() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


async def new_collection(client: pb_grpc.SearchServiceStub, dimensions: int = 0) -> str:
    name = unique_name()
    await client.CreateCollection(pb.CreateCollectionRequest(name=name, dimensions=dimensions))
    return name


async def count(client: pb_grpc.SearchServiceStub, name: str) -> int:
    response = await client.CountDocuments(pb.CountDocumentsRequest(collection=name))
    return int(response.document_count)


LONG_TEXT = " ".join(
    f"Sentence {i} explains how mitochondria turn nutrients into chemical energy."
    for i in range(60)
)
TEXTS = {
    "mito": "The mitochondria is the powerhouse of the cell, producing ATP.",
    "envoy": "Envoy retries idempotent gRPC calls on another upstream host.",
    "pg": "PostgreSQL stores embedding vectors with the pgvector extension and HNSW indexes.",
    "long": LONG_TEXT,
}


async def test_collection_lifecycle(search_server: ServerProcess) -> None:
    client = stub(search_server)
    name = unique_name()
    created = await client.CreateCollection(pb.CreateCollectionRequest(name=name))
    assert created.collection.dimensions == DIMENSIONS
    assert created.collection.embedding_model == "all-MiniLM-L6-v2"
    assert created.collection.index_settings.hnsw_m == 16
    assert created.collection.index_settings.hnsw_ef_construction == 64
    await expect_error(
        client.CreateCollection(pb.CreateCollectionRequest(name=name)),
        grpc.StatusCode.ALREADY_EXISTS,
        name,
    )
    got = await client.GetCollection(pb.GetCollectionRequest(name=name))
    assert (got.collection.document_count, got.collection.passage_count) == (0, 0)
    listed = await client.ListCollections(pb.ListCollectionsRequest())
    assert name in [c.name for c in listed.collections]
    await client.DeleteCollection(pb.DeleteCollectionRequest(name=name))
    for call in (
        client.GetCollection(pb.GetCollectionRequest(name=name)),
        client.DeleteCollection(pb.DeleteCollectionRequest(name=name)),
    ):
        await expect_error(call, grpc.StatusCode.NOT_FOUND, f"collection {name!r} does not exist")


async def test_upsert_get_count_delete(search_server: ServerProcess) -> None:
    client = stub(search_server)
    name = await new_collection(client)
    documents = [
        pb.Document(id=key, text=text, metadata={"topic": s(key), "year": n(2000 + i)})
        for i, (key, text) in enumerate(TEXTS.items())
    ]
    upserted = await client.UpsertDocuments(
        pb.UpsertDocumentsRequest(collection=name, documents=documents)
    )
    assert upserted.document_count == 4
    assert upserted.passage_count > 4  # the long text is several passages

    got = await client.GetDocument(pb.GetDocumentRequest(collection=name, id="long"))
    assert got.document.text == LONG_TEXT
    assert got.document.metadata["topic"].string_value == "long"
    assert got.document.metadata["year"].number_value == 2003
    assert got.passage_count == upserted.passage_count - 3

    assert await count(client, name) == 4
    recent = pb.MetadataFilter(
        conditions=[pb.FieldCondition(key="year", range=pb.NumericRange(gte=2002))]
    )
    counted = await client.CountDocuments(pb.CountDocumentsRequest(collection=name, filter=recent))
    assert counted.document_count == 2
    collection = (await client.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert (collection.document_count, collection.passage_count) == (4, upserted.passage_count)

    deleted = await client.DeleteDocuments(
        pb.DeleteDocumentsRequest(collection=name, ids=["mito", "long", "never-stored"])
    )
    assert deleted.deleted_count == 2
    assert await count(client, name) == 2
    collection = (await client.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert (collection.document_count, collection.passage_count) == (2, 2)
    await expect_error(
        client.GetDocument(pb.GetDocumentRequest(collection=name, id="mito")),
        grpc.StatusCode.NOT_FOUND,
        "'mito'",
    )
    hits = (
        await client.Search(
            pb.SearchRequest(collection=name, query="mitochondria energy", top_k=10)
        )
    ).hits
    assert {hit.document_id for hit in hits} <= {"envoy", "pg"}


async def test_reupsert_replaces_and_is_idempotent(search_server: ServerProcess) -> None:
    client = stub(search_server)
    name = await new_collection(client)
    first = await client.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            collection=name, documents=[pb.Document(id="d", text=LONG_TEXT, metadata={"v": n(1)})]
        )
    )
    assert first.passage_count > 1
    again = await client.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            collection=name, documents=[pb.Document(id="d", text=LONG_TEXT, metadata={"v": n(1)})]
        )
    )
    assert again.passage_count == first.passage_count
    collection = (await client.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert (collection.document_count, collection.passage_count) == (1, first.passage_count)

    await client.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            collection=name,
            documents=[
                pb.Document(id="d", text="Envoy balances gRPC traffic.", metadata={"v": n(2)})
            ],
        )
    )
    collection = (await client.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert (collection.document_count, collection.passage_count) == (1, 1)
    got = await client.GetDocument(pb.GetDocumentRequest(collection=name, id="d"))
    assert got.document.text == "Envoy balances gRPC traffic."
    assert got.document.metadata["v"].number_value == 2
    for mode in MODES:
        hits = (
            await client.Search(
                pb.SearchRequest(collection=name, query="mitochondria gRPC", mode=mode, top_k=10)
            )
        ).hits
        assert [(h.document_id, h.passage_index) for h in hits] == [("d", 0)]
        assert hits[0].passage_text == "Envoy balances gRPC traffic."


async def test_a_failed_upsert_stores_nothing(search_server: ServerProcess) -> None:
    client = stub(search_server)
    name = await new_collection(client)
    good = [pb.Document(id=f"good-{i}", text=f"Document number {i}.") for i in range(5)]
    bad_vector = pb.Document(id="bad", text="wrong size", vector=[0.5] * 3)
    await expect_error(
        client.UpsertDocuments(
            pb.UpsertDocumentsRequest(collection=name, documents=[*good, bad_vector])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "documents[5].vector has 3 values",
        "384",
    )
    long_id = pb.Document(id="x" * 300, text="too long an id")
    await expect_error(
        client.UpsertDocuments(
            pb.UpsertDocumentsRequest(collection=name, documents=[*good, long_id])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "documents[5].id has 300 characters; the limit is 256",
    )
    assert await count(client, name) == 0
    for document in good:
        await expect_error(
            client.GetDocument(pb.GetDocumentRequest(collection=name, id=document.id)),
            grpc.StatusCode.NOT_FOUND,
        )


def _random_unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def test_filtered_search_still_returns_top_k(search_server: ServerProcess) -> None:
    """2,000 documents, 1% of them "rare": a filtered query must still return top_k of
    them in every mode (pgvector: iterative HNSW scans; Qdrant: filtered search)."""
    client = stub(search_server)
    name = await new_collection(client, dimensions=DIMENSIONS)
    vectors = _random_unit_vectors(2000, seed=11)
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    documents = [
        pb.Document(
            id=f"doc-{i}",
            text=f"alpha {words[i % 5]} {words[(i * 7) % 5]} item {i}",
            metadata={"kind": s("rare" if i % 100 == 0 else "common"), "rank": n(i)},
            vector=vectors[i].tolist(),
        )
        for i in range(2000)
    ]
    for start in range(0, 2000, 250):
        await client.UpsertDocuments(
            pb.UpsertDocumentsRequest(collection=name, documents=documents[start : start + 250])
        )
    rare = pb.MetadataFilter(conditions=[pb.FieldCondition(key="kind", equals=s("rare"))])
    query_vector = _random_unit_vectors(1, seed=99)[0].tolist()
    for mode in MODES:
        response = await client.Search(
            pb.SearchRequest(
                collection=name,
                query="alpha gamma",
                query_vector=query_vector,
                mode=mode,
                top_k=10,
                filter=rare,
            )
        )
        assert len(response.hits) == 10, (mode, len(response.hits))
        assert all(hit.metadata["kind"].string_value == "rare" for hit in response.hits)
        assert response.mode == mode
    both = pb.MetadataFilter(
        conditions=[
            pb.FieldCondition(key="kind", any_of=pb.ValueList(values=[s("rare"), s("none")])),
            pb.FieldCondition(key="rank", range=pb.NumericRange(gte=500, lt=1500)),
        ]
    )
    response = await client.Search(
        pb.SearchRequest(
            collection=name, query="alpha", query_vector=query_vector, top_k=20, filter=both
        )
    )
    assert sorted(int(hit.document_id.split("-")[1]) for hit in response.hits) == list(
        range(500, 1500, 100)
    )
    # Exact dense ranking for the filter, for comparison: every rare document, best first.
    rare_ids = np.arange(0, 2000, 100)
    exact = rare_ids[np.argsort(-(vectors[rare_ids] @ np.asarray(query_vector)))][:10]
    dense = await client.Search(
        pb.SearchRequest(
            collection=name,
            query_vector=query_vector,
            mode=pb.SEARCH_MODE_DENSE,
            top_k=10,
            filter=rare,
        )
    )
    assert [hit.document_id for hit in dense.hits] == [f"doc-{i}" for i in exact]
    assert [hit.dense_rank for hit in dense.hits] == list(range(1, 11))


async def test_modes_rank_by_meaning_words_and_both(search_server: ServerProcess) -> None:
    client = stub(search_server)
    name = await new_collection(client)
    await client.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            collection=name,
            documents=[
                pb.Document(id=key, text=text) for key, text in TEXTS.items() if key != "long"
            ],
        )
    )
    dense = await client.Search(
        pb.SearchRequest(
            collection=name, query="organelle that makes energy", mode=pb.SEARCH_MODE_DENSE, top_k=3
        )
    )
    assert dense.hits[0].document_id == "mito"
    assert dense.hits[0].dense_rank == 1 and dense.hits[0].keyword_rank == 0
    assert len(dense.hits) == 3
    assert dense.hits[0].score > dense.hits[1].score
    keyword = await client.Search(
        pb.SearchRequest(collection=name, query="pgvector", mode=pb.SEARCH_MODE_KEYWORD, top_k=3)
    )
    assert [hit.document_id for hit in keyword.hits] == ["pg"]
    assert keyword.hits[0].keyword_rank == 1 and keyword.hits[0].dense_rank == 0
    fused = await client.Search(pb.SearchRequest(collection=name, query="pgvector HNSW", top_k=3))
    assert fused.mode == pb.SEARCH_MODE_HYBRID
    # The default: min-max score fusion, dense 0.4 / keyword 0.6 (ragmeshd/defaults.py).
    assert fused.hits[0].document_id == "pg" and fused.hits[0].keyword_rank == 1
    assert 0.6 - 1e-6 <= fused.hits[0].score <= 1.0 + 1e-6
    hybrid = await client.Search(
        pb.SearchRequest(
            collection=name,
            query="pgvector HNSW",
            top_k=3,
            fusion_method=pb.FUSION_METHOD_RRF,
        )
    )
    assert hybrid.mode == pb.SEARCH_MODE_HYBRID
    assert hybrid.hits[0].document_id == "pg"
    assert hybrid.hits[0].dense_rank >= 1 and hybrid.hits[0].keyword_rank == 1
    assert hybrid.hits[0].score == pytest.approx(
        1 / (60 + hybrid.hits[0].dense_rank) + 1 / 61, rel=1e-5
    )
    weighted = await client.Search(
        pb.SearchRequest(
            collection=name,
            query="pgvector HNSW",
            top_k=3,
            fusion_method=pb.FUSION_METHOD_RRF,
            rrf_k=10,
            dense_weight=0.5,
            keyword_weight=2,
        )
    )
    top = weighted.hits[0]
    assert top.score == pytest.approx(0.5 / (10 + top.dense_rank) + 2 / 11, rel=1e-5)


async def test_bad_inputs_name_the_problem_and_the_limit(search_server: ServerProcess) -> None:
    client = stub(search_server)
    name = await new_collection(client)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases = [
        (
            client.Search(pb.SearchRequest(collection=name, query="x", top_k=101)),
            invalid,
            ["top_k is 101", "1 to 100"],
        ),
        (client.Search(pb.SearchRequest(collection=name, query="")), invalid, ["query is empty"]),
        (
            client.Search(pb.SearchRequest(collection=name, query="x" * 2001)),
            invalid,
            ["2001 characters", "limit is 2000"],
        ),
        (
            client.Search(
                pb.SearchRequest(collection=name, mode=pb.SEARCH_MODE_DENSE, query_vector=[1.0] * 5)
            ),
            invalid,
            ["query_vector has 5 values", "384"],
        ),
        (
            client.Search(
                pb.SearchRequest(
                    collection=name,
                    query="x",
                    filter=pb.MetadataFilter(
                        conditions=[pb.FieldCondition(key="k", range=pb.NumericRange())]
                    ),
                )
            ),
            invalid,
            ["filter.conditions[0].range has no bound"],
        ),
        (
            client.UpsertDocuments(
                pb.UpsertDocumentsRequest(
                    collection=name,
                    documents=[pb.Document(id=str(i), text="t") for i in range(257)],
                )
            ),
            invalid,
            ["257 documents", "limit is 256"],
        ),
        (
            client.UpsertDocuments(
                pb.UpsertDocumentsRequest(
                    collection=name, documents=[pb.Document(id="a" * 257, text="t")]
                )
            ),
            invalid,
            ["257 characters", "limit is 256"],
        ),
        (
            client.DeleteDocuments(
                pb.DeleteDocumentsRequest(collection=name, ids=[str(i) for i in range(1001)])
            ),
            invalid,
            ["1001 ids", "limit is 1000"],
        ),
        (
            client.CreateCollection(pb.CreateCollectionRequest(name="Bad Name")),
            invalid,
            ["1 to 63 characters"],
        ),
        (
            client.CreateCollection(
                pb.CreateCollectionRequest(name=unique_name(), dimensions=5000)
            ),
            invalid,
            ["dimensions is 5000", "1 to 2000"],
        ),
        (
            client.CreateCollection(pb.CreateCollectionRequest(name=name)),
            grpc.StatusCode.ALREADY_EXISTS,
            [name],
        ),
    ]
    missing = "no-such-collection"
    for call in (
        client.Search(pb.SearchRequest(collection=missing, query="x")),
        client.UpsertDocuments(
            pb.UpsertDocumentsRequest(collection=missing, documents=[pb.Document(id="a", text="t")])
        ),
        client.GetDocument(pb.GetDocumentRequest(collection=missing, id="a")),
        client.CountDocuments(pb.CountDocumentsRequest(collection=missing)),
        client.DeleteDocuments(pb.DeleteDocumentsRequest(collection=missing, ids=["a"])),
        client.GetCollection(pb.GetCollectionRequest(name=missing)),
    ):
        cases.append((call, grpc.StatusCode.NOT_FOUND, [f"collection {missing!r} does not exist"]))
    for call, code, fragments in cases:
        await expect_error(call, code, *fragments)
    assert await count(client, name) == 0
