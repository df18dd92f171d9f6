"""pgvector specifics the contract suite cannot see: the HNSW index is used for filtered
dense search, iterative scans keep a filter from starving the result, and BM25 pruning
changes nothing but speed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.config import SearchSettings
from services.postgres.embedded import EmbeddedPostgres
from services.search.backends.pgvector import (
    PgVectorBackend,
    _Bm25Query,
    bm25_idf,
    documents_table,
    passages_table,
    tsquery_literal,
)
from services.search.filters import SqlParameters, to_sql
from services.search.records import CollectionSpec, NumericRange
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
                columns=["document_id", "passage_index", "text", "metadata", "embedding"],
                records=[
                    (str(i), 0, "t", json.dumps({"rank": i}), vectors[i]) for i in range(ROWS)
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


async def test_bm25_pruning_returns_exactly_the_full_ranking(
    postgres_server: PostgresProcess,
) -> None:
    """MaxScore pruning skips passages that only have common terms; the top passages and
    their scores must be exactly those of scoring every matching passage."""
    create_database(postgres_server.dsn, "bm25")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="bm25")
    backend = PgVectorBackend(dsn, SearchSettings(pg_pool_min_size=1, pg_pool_max_size=2))
    await backend.start()
    try:
        await backend.create_collection(CollectionSpec("words", 2, "test", 16, 64))
        rng = np.random.default_rng(9)
        vocabulary = [f"term{i}" for i in range(300)]
        weights = 1.0 / np.arange(1, 301)
        picks = rng.choice(300, size=(3000, 10), p=weights / weights.sum())
        texts = [" ".join(vocabulary[i] for i in row) for row in picks]
        async with backend.pool.acquire() as conn:
            collection_id = await conn.fetchval("SELECT id FROM search_collections")
            documents, passages = documents_table(collection_id), passages_table(collection_id)
            await conn.copy_records_to_table(
                documents,
                columns=["id", "text", "metadata", "passage_count"],
                records=[(str(i), t, json.dumps({"i": i}), 1) for i, t in enumerate(texts)],
            )
            await conn.copy_records_to_table(
                passages,
                columns=["document_id", "passage_index", "text", "metadata", "embedding"],
                records=[
                    (str(i), 0, t, json.dumps({"i": i}), np.array([1.0, 0.0], np.float32))
                    for i, t in enumerate(texts)
                ],
            )
            terms = await conn.fetchval(f"SELECT sum(length(terms)) FROM {passages}")
            await conn.execute(
                "UPDATE search_collections SET document_count = 3000, passage_count = 3000,"
                " passage_terms = $1",
                terms,
            )
            queries = [" ".join(texts[i].split()[:3]) for i in range(0, 3000, 150)]
            queries += ["term0 term1 term2", "term0", "term299 term0 term1"]
            for text in queries:
                lexemes = await conn.fetchval(
                    "SELECT tsvector_to_array(to_tsvector('english', $1))", text
                )
                frequencies = await conn.fetch(
                    f"SELECT (SELECT count(*) FROM {passages} WHERE terms @@ t::tsquery)"
                    " FROM unnest($1::text[]) AS t",
                    [tsquery_literal(lexeme) for lexeme in lexemes],
                )
                idf = [bm25_idf(row[0], 3000) for row in frequencies]
                for limit, conditions in ((10, ()), (30, (NumericRange("i", lt=1500),))):
                    query = _Bm25Query(
                        passages,
                        lexemes,
                        idf,
                        average_length=terms / 3000,
                        k1=1.2,
                        b=0.75,
                        limit=limit,
                        conditions=conditions,
                    )
                    full = await query._score(conn, list(range(len(lexemes))))
                    pruned = await query.run(conn)
                    assert [tuple(row.values()) for row in pruned] == [
                        tuple(row.values()) for row in full
                    ], text
    finally:
        await backend.close()
