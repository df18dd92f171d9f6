"""pgvector specifics the contract suite cannot see: the HNSW index is used for filtered
dense search, iterative scans keep a filter from starving the result, and BM25 pruning
changes nothing but speed."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import numpy as np
import pytest

from ragmeshd.postgres.embedded import EmbeddedPostgres
from ragmeshd.search.backends.base import SearchBackend
from ragmeshd.search.backends.bm25_planner import Bm25Query, read_statistics
from ragmeshd.search.backends.pg_keywords import terms_table
from ragmeshd.search.backends.pg_schema import documents_table, passages_table
from ragmeshd.search.backends.pgvector import PgVectorBackend
from ragmeshd.search.filters import SqlParameters, to_sql
from ragmeshd.search.keywords import bm25_idf, passage_terms, query_terms
from ragmeshd.search.records import (
    CollectionSpec,
    FusionMethod,
    FusionParams,
    NumericRange,
    Passage,
    PreparedDocument,
    Visible,
)
from ragmeshd.settings import SearchSettings
from tests.integration.search.conftest import PostgresProcess, create_database

pytestmark = pytest.mark.integration

ROWS = 10_000
DIMENSIONS = 384


async def test_filtered_hnsw_scan_returns_the_limit(postgres_server: PostgresProcess) -> None:
    create_database(postgres_server.dsn, "hnsw")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="hnsw")
    backend = PgVectorBackend(dsn, SearchSettings(pg_pool_min_size=1, pg_pool_max_size=2))
    await backend.start()
    try:
        await backend.create_collection(CollectionSpec("big", DIMENSIONS, "test", 16, 64))
        rng = np.random.default_rng(5)
        vectors = rng.normal(size=(ROWS, DIMENSIONS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        async with backend.pool.acquire() as conn:
            collection_id = await conn.fetchval("SELECT id FROM search_collections")
            documents, passages = documents_table(collection_id), passages_table(collection_id)
            # Bulk load, then build the index once (much faster than row by row).
            index_sql = await conn.fetchval(
                "SELECT indexdef FROM pg_indexes WHERE indexname = $1", f"{passages}_embedding"
            )
            await conn.execute(f"DROP INDEX {passages}_embedding")
            await conn.copy_records_to_table(
                documents,
                columns=["id", "text", "metadata", "passage_count"],
                records=[(str(i), "t", json.dumps({"rank": i}), 1) for i in range(ROWS)],
            )
            await conn.copy_records_to_table(
                passages,
                columns=[
                    "document_id",
                    "passage_index",
                    "text",
                    "metadata",
                    "embedding",
                    "terms",
                    "frequencies",
                    "length",
                ],
                records=[
                    (str(i), 0, "t", json.dumps({"rank": i}), vectors[i], [1], [1], 1)
                    for i in range(ROWS)
                ],
            )
            await conn.execute(index_sql)
            await conn.execute(f"ANALYZE {passages}")

            # 2% of the rows pass: an ef_search-sized candidate list holds about 2 of them.
            conditions = (NumericRange("rank", lt=ROWS * 0.02),)
            params = SqlParameters()
            vector, where = params.add(vectors[0]), to_sql(conditions, "metadata", params)
            query = (
                f"SELECT document_id FROM {passages} WHERE {where}"
                f" ORDER BY embedding <=> {vector} LIMIT 30"
            )
            plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {query}", *params.values))
            assert f"Index Scan using {passages}_embedding" in plan, plan
            await conn.execute("SET hnsw.iterative_scan = off")
            starved = await conn.fetch(query, *params.values)
            await conn.execute("RESET hnsw.iterative_scan")
        assert len(starved) < 30  # what a filtered HNSW query returns without iterative scans

        hits = await backend.dense_search("big", vectors[0], 30, conditions)
        assert len(hits) == 30
        assert all(float(hit.metadata["rank"]) < ROWS * 0.02 for hit in hits)
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
        assert hits[0].document_id == "0"  # the query vector itself passes the filter
    finally:
        await backend.close()


def brute_force_bm25(
    passages: dict[str, str], query: str, limit: int, keep: set[str] | None = None
) -> list[tuple[str, float]]:
    """The oracle: BM25 computed from scratch over every passage (one per document)."""
    counted = {doc: passage_terms(text) for doc, text in passages.items()}
    average = max(sum(t.length for t in counted.values()) / len(counted), 1.0)
    terms = query_terms(query)
    idf = [
        bm25_idf(sum(term in t.frequencies for t in counted.values()), len(counted))
        for term in terms
    ]
    scored = []
    for doc, counts in counted.items():
        if (keep is not None and doc not in keep) or not any(
            t in counts.frequencies for t in terms
        ):
            continue
        score = 0.0
        for term, weight in zip(terms, idf, strict=True):
            tf = counts.frequencies.get(term, 0)
            score += (
                weight * tf * (1.2 + 1) / (tf + 1.2 * (1 - 0.75 + 0.75 * counts.length / average))
            )
        scored.append((doc, score))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored[:limit]


async def test_bm25_is_exact_with_write_time_statistics_and_pruning(
    postgres_server: PostgresProcess,
) -> None:
    """Term statistics kept at write time (inserts, replacements, deletes) give exactly the
    BM25 of a brute-force oracle, and MaxScore pruning changes nothing but speed."""
    create_database(postgres_server.dsn, "bm25")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="bm25")
    backend = PgVectorBackend(dsn, SearchSettings(pg_pool_min_size=1, pg_pool_max_size=2))
    await backend.start()
    try:
        await backend.create_collection(CollectionSpec("words", 2, "test", 16, 64))
        rng = np.random.default_rng(9)
        vocabulary = [f"term{i}" for i in range(300)] + ["the", "of", "cells", "cell"]
        weights = 1.0 / np.arange(1, len(vocabulary) + 1)
        lengths = rng.integers(3, 16, size=2000)
        texts = {
            str(i): " ".join(
                vocabulary[w]
                for w in rng.choice(len(vocabulary), size=n, p=weights / weights.sum())
            )
            for i, n in enumerate(lengths)
        }

        def document(doc: str, text: str) -> PreparedDocument:
            vector = np.array([1.0, 0.0], np.float32)
            return PreparedDocument(doc, text, {"i": float(doc)}, [Passage(0, text, vector)])

        for start in range(0, 2000, 500):
            batch = list(texts.items())[start : start + 500]
            await backend.upsert("words", [document(d, t) for d, t in batch])
        # Writes after the load: replacements (new text) and deletions move the statistics.
        for doc in ("1", "2", "3"):
            texts[doc] = "term0 term5 cells cell of the " + texts[doc]
        await backend.upsert("words", [document(d, texts[d]) for d in ("1", "2", "3")])
        await backend.delete_documents("words", ["4", "5", "6"])
        for doc in ("4", "5", "6"):
            del texts[doc]

        async with backend.pool.acquire() as conn:
            collection_id = await conn.fetchval("SELECT id FROM search_collections")
            stored = dict(
                await conn.fetch(f"SELECT term, passages FROM {terms_table(collection_id)}")
            )
        counted = [passage_terms(text) for text in texts.values()]
        expected = {
            term: sum(term in t.frequencies for t in counted)
            for term in {term for t in counted for term in t.frequencies}
        }
        assert {t: n for t, n in stored.items() if n} == expected

        queries = [" ".join(texts[d].split()[:3]) for d in list(texts)[::200]]
        queries += ["term0 term1 term2", "term0", "term299 term0 term1", "cells of the cell"]
        keep = {d for d in texts if float(d) < 1000}
        for text in queries:
            for limit, conditions, allowed in (
                (10, (), None),
                (30, (NumericRange("i", lt=1000),), keep),
            ):
                hits = await backend.keyword_search("words", text, limit, conditions)
                oracle = brute_force_bm25(texts, text, limit, allowed)
                assert [hit.document_id for hit in hits] == [doc for doc, _ in oracle], text
                assert [hit.score for hit in hits] == pytest.approx([s for _, s in oracle]), text

                async with backend.pool.acquire() as conn:
                    collection = await conn.fetchrow("SELECT * FROM search_collections")
                    statistics = await read_statistics(
                        conn,
                        terms_table(collection_id),
                        query_terms(text),
                        collection["passage_count"],
                        collection["passage_terms"],
                    )
                    query = Bm25Query(
                        passages_table(collection_id),
                        statistics,
                        k1=1.2,
                        b=0.75,
                        limit=limit,
                        conditions=conditions,
                    )
                    full = await query.score(conn, [[i] for i in range(len(statistics.terms))])
                    pruned = await query.run(conn)
                assert [tuple(row.values()) for row in pruned] == [
                    tuple(row.values()) for row in full
                ], text
    finally:
        await backend.close()


async def test_keyword_index_sees_every_acknowledged_write_on_every_replica(
    postgres_server: PostgresProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas (backends) on one database, each with its in-memory keyword index: a
    search right after a write acknowledged by the other replica ranks with that write, and
    every answer equals the brute-force BM25, whether the index caught up from the change
    log, was rebuilt in the background (the SQL planner answering meanwhile) or was built
    inline."""
    create_database(postgres_server.dsn, "bm25_replicas")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="bm25_replicas")
    settings = SearchSettings(pg_pool_min_size=1, pg_pool_max_size=2)
    writer, reader = PgVectorBackend(dsn, settings), PgVectorBackend(dsn, settings)
    await writer.start()
    await reader.start()
    try:
        await writer.create_collection(CollectionSpec("words", 2, "test", 16, 64))
        rng = np.random.default_rng(5)
        vocabulary = [f"w{i}" for i in range(200)]
        weights = 1.0 / np.arange(1, len(vocabulary) + 1)
        texts = {
            str(i): " ".join(rng.choice(vocabulary, size=8, p=weights / weights.sum()))
            for i in range(300)
        }

        def document(doc: str) -> PreparedDocument:
            angle = int(doc) / 50  # distinct directions, so DENSE has an order
            vector = np.array([np.cos(angle), np.sin(angle)], np.float32)
            return PreparedDocument(doc, texts[doc], {}, [Passage(0, texts[doc], vector)])

        async def check(query: str) -> None:
            for backend in (reader, writer):
                hits = await backend.keyword_search("words", query, 10, ())
                oracle = brute_force_bm25(texts, query, 10)
                assert [h.document_id for h in hits] == [d for d, _ in oracle], query
                assert [h.score for h in hits] == pytest.approx([s for _, s in oracle])
                # HYBRID in one statement ranks as DENSE and KEYWORD fused separately.
                vector = np.array([0.6, 0.8], np.float32)
                min_max = FusionParams(60, 0.4, 0.6, FusionMethod.MIN_MAX)
                for fusion in (FusionParams(60, 1, 1), min_max):
                    one = await backend.hybrid_search("words", vector, query, 10, (), fusion)
                    apart = await SearchBackend.hybrid_search(
                        backend, "words", vector, query, 10, (), fusion
                    )
                    assert one == apart, query

        await writer.upsert("words", [document(d) for d in texts])
        await check("w0 w1 w7")  # both build inline
        texts["7"] = "zebra w0 w1"
        texts["300"] = "zebra zebra w3"
        await writer.upsert("words", [document("7"), document("300")])
        await check("zebra w0")  # a term new since the index was built, caught up
        await writer.delete_documents("words", ["300", "8"])
        del texts["300"], texts["8"]
        await check("zebra w1 w2")

        # A collection too large to index inline: the first query starts a background
        # build and is answered by the SQL planner; later ones by the index.
        monkeypatch.setattr("ragmeshd.search.backends.pg_keyword_index.INLINE_BUILD_PASSAGES", 0)
        fresh = PgVectorBackend(dsn, settings)
        await fresh.start()
        try:
            for _ in range(3):
                hits = await fresh.keyword_search("words", "zebra w5", 10, ())
                oracle = brute_force_bm25(texts, "zebra w5", 10)
                assert [h.document_id for h in hits] == [d for d, _ in oracle]
                await asyncio.sleep(0.2)
            texts["9"] = "zebra w5 w5"
            await writer.upsert("words", [document("9")])
            hits = await fresh.keyword_search("words", "zebra w5", 10, ())
            assert [h.document_id for h in hits] == [
                d for d, _ in brute_force_bm25(texts, "zebra w5", 10)
            ]
        finally:
            await fresh.close()
    finally:
        await writer.close()
        await reader.close()


async def test_keyword_index_with_groups_ranks_as_the_sql_path(
    postgres_server: PostgresProcess,
) -> None:
    """A key's document groups (issue 24): the replica's in-memory keyword index with its
    visibility mask gives the same passages, order and scores as the SQL planner with the
    group condition in the statement, and a full top k."""
    create_database(postgres_server.dsn, "bm25groups")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="bm25groups")
    backend = PgVectorBackend(dsn, SearchSettings(pg_pool_min_size=1, pg_pool_max_size=2))
    await backend.start()
    try:
        await backend.create_collection(CollectionSpec("grouped", 2, "test", 16, 64))
        rng = np.random.default_rng(24)
        vocabulary = [f"term{i}" for i in range(120)]
        weights = 1.0 / np.arange(1, len(vocabulary) + 1)
        acls = ("", "", "finance", "finance,board", "legal")
        documents = []
        for i in range(600):
            words = rng.choice(
                len(vocabulary), size=int(rng.integers(3, 14)), p=weights / weights.sum()
            )
            text = " ".join(vocabulary[w] for w in words)
            acl = acls[int(rng.integers(0, len(acls)))]
            metadata: dict[str, str | float | bool] = {"acl": acl} if acl else {}
            vector = rng.normal(size=2).astype(np.float32)
            vector /= np.linalg.norm(vector)
            documents.append(PreparedDocument(str(i), text, metadata, [Passage(0, text, vector)]))
        await backend.upsert("grouped", documents)
        async with backend.pool.acquire() as conn:
            collection = await conn.fetchrow("SELECT * FROM search_collections")
        for groups in ((), ("finance",), ("board", "legal")):
            conditions = (Visible(groups),)
            for text in ("term0", "term0 term1 term7", "term3 term50 term110"):
                indexed = await backend.keyword_search("grouped", text, 20, conditions)
                async with backend.pool.acquire() as conn:
                    statistics = await read_statistics(
                        conn,
                        terms_table(collection["id"]),
                        query_terms(text),
                        collection["passage_count"],
                        collection["passage_terms"],
                    )
                    rows = await Bm25Query(
                        passages_table(collection["id"]),
                        statistics,
                        k1=1.2,
                        b=0.75,
                        limit=20,
                        conditions=conditions,
                    ).run(conn)
                assert [h.document_id for h in indexed] == [r["document_id"] for r in rows]
                assert [h.score for h in indexed] == pytest.approx([r["score"] for r in rows])
                # HYBRID in one statement (index + filtered HNSW scan) ranks as the two apart.
                vector = np.array([0.6, 0.8], np.float32)
                fusion = FusionParams(60, 1, 1)
                one = await backend.hybrid_search("grouped", vector, text, 20, conditions, fusion)
                apart = await SearchBackend.hybrid_search(
                    backend, "grouped", vector, text, 20, conditions, fusion
                )
                assert one == apart, (groups, text)
                assert len(one) == 20
                for ranked in one:
                    acl = str(ranked.passage.metadata.get("acl", ""))
                    assert not acl or set(acl.split(",")) & set(groups), (groups, text, acl)
            assert len(await backend.keyword_search("grouped", "term0", 20, conditions)) == 20
        entry = next(iter(backend._keyword_indexes._entries.values()))
        assert entry.index is not None, "the in-memory index answered"
    finally:
        await backend.close()


async def test_a_document_larger_than_one_copy_goes_in_chunks_all_or_nothing(
    postgres_server: PostgresProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each COPY of a write is one statement under the statement timeout, so a large document
    goes in chunks; they share the write's transaction: a chunk that fails leaves nothing of
    the write behind, the earlier chunks included."""
    from ragmeshd.search.backends import pgvector

    monkeypatch.setattr(pgvector, "COPY_CHUNK_PASSAGES", 3)
    create_database(postgres_server.dsn, "chunks")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="chunks")
    backend = PgVectorBackend(dsn, SearchSettings(pg_pool_min_size=1, pg_pool_max_size=2))
    await backend.start()
    try:
        await backend.create_collection(CollectionSpec("chunks", 4, "test", 16, 64))
        unit = np.eye(4, dtype=np.float32)

        def document(doc: str, count: int, last: np.ndarray) -> PreparedDocument:
            passages = [Passage(i, f"{doc} passage {i}", unit[i % 4]) for i in range(count - 1)]
            passages.append(Passage(count - 1, f"{doc} passage {count - 1}", last))
            return PreparedDocument(doc, f"{doc} text", {}, passages)

        await backend.upsert("chunks", [document("big", 8, unit[0])])
        stored = await backend.get_document("chunks", "big")
        assert stored is not None and stored.passage_count == 8
        # The eighth passage's vector has the wrong size: the third COPY fails after two
        # chunks went in, and the whole write, the replaced document included, is undone.
        with pytest.raises(asyncpg.PostgresError, match="dimensions"):
            await backend.upsert("chunks", [document("big", 8, np.ones(5, np.float32))])
        stored = await backend.get_document("chunks", "big")
        assert stored is not None and stored.passage_count == 8
        async with backend.pool.acquire() as conn:
            collection = await conn.fetchrow("SELECT * FROM search_collections")
            rows = await conn.fetchval(f"SELECT count(*) FROM {passages_table(collection['id'])}")
        assert rows == 8 and collection["passage_count"] == 8
    finally:
        await backend.close()
