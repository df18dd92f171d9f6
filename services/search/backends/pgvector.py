"""The PostgreSQL + pgvector backend.

Schema: the catalog table search_collections (from the migrations) and, per collection,
search_documents_<id> (a document's text and metadata) and search_passages_<id> (each
passage's text, a copy of the metadata for filtering in the same scan, its vector, and a
generated tsvector). Passage vectors have an HNSW index (vector_cosine_ops) and tsvectors a
GIN index. Dense search is an HNSW scan with iterative scanning, so a filter that rejects
candidates does not shrink the result below the limit; keyword search finds candidates with
the GIN index and ranks them by BM25 (term frequencies from the tsvector, document
frequencies counted with the same index, average length from the collection's counters).
Every write is one transaction that also locks and updates the collection's counters.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import asyncpg
import numpy as np

from services.config import SearchSettings
from services.postgres.pool import connect_with_retries, redact
from services.runtime import metrics
from services.search import migrate
from services.search.backends.base import (
    CollectionExistsError,
    CollectionNotFoundError,
    SearchBackend,
    StoreUnavailableError,
)
from services.search.backends.pg_connection import search_pool, translated_errors
from services.search.filters import SqlParameters, to_sql
from services.search.records import (
    CollectionInfo,
    CollectionSpec,
    Filter,
    Metadata,
    PassageHit,
    PreparedDocument,
    StoredDocument,
)

_log = logging.getLogger("ragmesh.search.pgvector")

_COLLECTION_COLUMNS = (
    "id, name, dimensions, embedding_model, hnsw_m, hnsw_ef_construction,"
    " text_search_config::text AS text_search_config, created_at, document_count,"
    " passage_count, passage_terms"
)


def documents_table(collection_id: int) -> str:
    return f"search_documents_{int(collection_id)}"


def passages_table(collection_id: int) -> str:
    return f"search_passages_{int(collection_id)}"


def tsquery_literal(lexeme: str) -> str:
    """A lexeme quoted for tsquery input: no further parsing or stemming is applied."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def bm25_idf(document_frequency: int, passages: int) -> float:
    """BM25's inverse document frequency (never negative), as Qdrant's IDF modifier uses."""
    return math.log((passages - document_frequency + 0.5) / (document_frequency + 0.5) + 1)


class PgVectorBackend(SearchBackend):
    name = "pgvector"

    def __init__(self, dsn: str, settings: SearchSettings) -> None:
        self._dsn = dsn
        self._settings = settings
        self._pool: asyncpg.Pool | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        s = self._settings
        conn = await connect_with_retries(
            self._dsn, attempts=s.pg_connect_attempts, backoff_base_s=s.pg_connect_backoff_base_s
        )
        try:
            applied = await migrate.MIGRATIONS.upgrade(conn)
        finally:
            await conn.close()
        _log.info(
            "database ready",
            extra={"dsn": redact(self._dsn), "migrations_applied": applied},
        )
        self._pool = pool = await search_pool(self._dsn, s)
        metrics.POOL_SIZE.set_function(pool.get_size)
        metrics.POOL_IN_USE.set_function(lambda: pool.get_size() - pool.get_idle_size())

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailableError("the database connection is not ready yet")
        return self._pool

    async def ping(self) -> None:
        timeout = self._settings.pg_health_timeout_s
        try:
            with translated_errors("the health check"):
                async with self.pool.acquire(timeout=timeout) as conn:
                    await conn.fetchval("SELECT 1", timeout=timeout)
        except Exception:
            # Connections from before an outage are dead; replace them all.
            if self._pool is not None:
                await self._pool.expire_connections()
            raise

    # -- collections -------------------------------------------------------------------

    async def create_collection(self, spec: CollectionSpec) -> CollectionInfo:
        config = self._settings.pg_text_search_config
        with translated_errors("creating a collection"):
            async with self.pool.acquire() as conn, conn.transaction():
                try:
                    collection_id = await conn.fetchval(
                        "INSERT INTO search_collections (name, dimensions, embedding_model,"
                        " hnsw_m, hnsw_ef_construction, text_search_config)"
                        " VALUES ($1, $2, $3, $4, $5, $6::regconfig) RETURNING id",
                        spec.name,
                        spec.dimensions,
                        spec.embedding_model,
                        spec.hnsw_m,
                        spec.hnsw_ef_construction,
                        config,
                    )
                except asyncpg.UniqueViolationError:
                    raise CollectionExistsError(spec.name) from None
                await conn.execute(_collection_ddl(collection_id, spec, config))
                row = await self._collection_row(conn, spec.name)
        return _collection_info(row)

    async def list_collections(self) -> list[CollectionInfo]:
        with translated_errors("listing collections"):
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    f"SELECT {_COLLECTION_COLUMNS} FROM search_collections ORDER BY name"
                )
        return [_collection_info(row) for row in rows]

    async def get_collection(self, name: str) -> CollectionInfo:
        with translated_errors("reading a collection"):
            async with self.pool.acquire() as conn:
                return _collection_info(await self._collection_row(conn, name))

    async def delete_collection(self, name: str) -> None:
        with translated_errors("deleting a collection"):
            async with self.pool.acquire() as conn, conn.transaction():
                collection_id = await conn.fetchval(
                    "DELETE FROM search_collections WHERE name = $1 RETURNING id", name
                )
                if collection_id is None:
                    raise CollectionNotFoundError(name)
                await conn.execute(
                    f"DROP TABLE IF EXISTS {passages_table(collection_id)},"
                    f" {documents_table(collection_id)}"
                )

    async def _collection_row(
        self, conn: asyncpg.Connection, name: str, *, for_update: bool = False
    ) -> asyncpg.Record:
        lock = " FOR UPDATE" if for_update else ""
        row = await conn.fetchrow(
            f"SELECT {_COLLECTION_COLUMNS} FROM search_collections WHERE name = $1{lock}", name
        )
        if row is None:
            raise CollectionNotFoundError(name)
        return row

    # -- documents ---------------------------------------------------------------------

    async def upsert(self, name: str, documents: Sequence[PreparedDocument]) -> None:
        ids = [document.id for document in documents]
        with translated_errors("storing documents"):
            async with self.pool.acquire() as conn, conn.transaction():
                collection = await self._collection_row(conn, name, for_update=True)
                documents_name = documents_table(collection["id"])
                passages_name = passages_table(collection["id"])
                before = await conn.fetchrow(
                    f"SELECT count(*) AS passages, coalesce(sum(length(terms)), 0) AS terms"
                    f" FROM {passages_name} WHERE document_id = ANY($1::text[])",
                    ids,
                )
                replaced = await conn.fetch(
                    f"DELETE FROM {documents_name} WHERE id = ANY($1::text[]) RETURNING id", ids
                )
                await conn.copy_records_to_table(
                    documents_name,
                    columns=["id", "text", "metadata", "passage_count"],
                    records=[
                        (d.id, d.text, json.dumps(d.metadata), len(d.passages)) for d in documents
                    ],
                )
                await conn.copy_records_to_table(
                    passages_name,
                    columns=["document_id", "passage_index", "text", "metadata", "embedding"],
                    records=[
                        (d.id, p.index, p.text, json.dumps(d.metadata), p.vector)
                        for d in documents
                        for p in d.passages
                    ],
                )
                terms = await conn.fetchval(
                    f"SELECT coalesce(sum(length(terms)), 0) FROM {passages_name}"
                    " WHERE document_id = ANY($1::text[])",
                    ids,
                )
                await conn.execute(
                    "UPDATE search_collections SET document_count = document_count + $2,"
                    " passage_count = passage_count + $3, passage_terms = passage_terms + $4"
                    " WHERE id = $1",
                    collection["id"],
                    len(documents) - len(replaced),
                    sum(len(d.passages) for d in documents) - before["passages"],
                    terms - before["terms"],
                )

    async def delete_documents(self, name: str, ids: Sequence[str]) -> int:
        with translated_errors("deleting documents"):
            async with self.pool.acquire() as conn, conn.transaction():
                collection = await self._collection_row(conn, name, for_update=True)
                before = await conn.fetchrow(
                    f"SELECT count(*) AS passages, coalesce(sum(length(terms)), 0) AS terms"
                    f" FROM {passages_table(collection['id'])}"
                    " WHERE document_id = ANY($1::text[])",
                    list(ids),
                )
                deleted = await conn.fetch(
                    f"DELETE FROM {documents_table(collection['id'])}"
                    " WHERE id = ANY($1::text[]) RETURNING id",
                    list(ids),
                )
                await conn.execute(
                    "UPDATE search_collections SET document_count = document_count - $2,"
                    " passage_count = passage_count - $3, passage_terms = passage_terms - $4"
                    " WHERE id = $1",
                    collection["id"],
                    len(deleted),
                    before["passages"],
                    before["terms"],
                )
        return len(deleted)

    async def get_document(self, name: str, document_id: str) -> StoredDocument | None:
        with translated_errors("reading a document"):
            async with self.pool.acquire() as conn:
                collection = await self._collection_row(conn, name)
                row = await conn.fetchrow(
                    f"SELECT id, text, metadata, passage_count"
                    f" FROM {documents_table(collection['id'])} WHERE id = $1",
                    document_id,
                )
        if row is None:
            return None
        return StoredDocument(
            row["id"], row["text"], _metadata(row["metadata"]), row["passage_count"]
        )

    async def count_documents(self, name: str, conditions: Filter) -> int:
        with translated_errors("counting documents"):
            async with self.pool.acquire() as conn:
                collection = await self._collection_row(conn, name)
                if not conditions:
                    return int(collection["document_count"])
                params = SqlParameters()
                where = to_sql(conditions, "metadata", params)
                return int(
                    await conn.fetchval(
                        f"SELECT count(*) FROM {documents_table(collection['id'])} WHERE {where}",
                        *params.values,
                    )
                )

    # -- search ------------------------------------------------------------------------

    async def dense_search(
        self, name: str, vector: np.ndarray, limit: int, conditions: Filter
    ) -> list[PassageHit]:
        params = SqlParameters()
        query_vector = params.add(vector)
        where = to_sql(conditions, "metadata", params)
        with translated_errors("a dense search"):
            async with self.pool.acquire() as conn:
                collection = await self._collection_row(conn, name)
                # The HNSW scan inside the materialised CTE may return rows slightly out of
                # order (relaxed iterative scan); the outer ORDER BY restores exact order.
                rows = await conn.fetch(
                    "WITH nearest AS MATERIALIZED ("
                    f" SELECT document_id, passage_index, text, metadata,"
                    f" embedding <=> {query_vector} AS distance"
                    f" FROM {passages_table(collection['id'])} WHERE {where}"
                    f" ORDER BY embedding <=> {query_vector} LIMIT {params.add(limit)})"
                    " SELECT * FROM nearest ORDER BY distance, document_id, passage_index",
                    *params.values,
                )
        return [_hit(row, 1.0 - row["distance"]) for row in rows]

    async def keyword_search(
        self, name: str, text: str, limit: int, conditions: Filter
    ) -> list[PassageHit]:
        with translated_errors("a keyword search"):
            async with self.pool.acquire() as conn:
                collection = await self._collection_row(conn, name)
                passages_name = passages_table(collection["id"])
                lexemes: list[str] = await conn.fetchval(
                    "SELECT tsvector_to_array(to_tsvector($1::regconfig, $2))",
                    collection["text_search_config"],
                    text,
                )
                passages = int(collection["passage_count"])
                if not lexemes or not passages:
                    return []
                # Document frequencies, each counted through the GIN index.
                frequencies = await conn.fetch(
                    f"SELECT term, (SELECT count(*) FROM {passages_name}"
                    " WHERE terms @@ term::tsquery) AS df FROM unnest($1::text[]) AS term",
                    [tsquery_literal(lexeme) for lexeme in lexemes],
                )
                idf = [bm25_idf(int(row["df"]), passages) for row in frequencies]
                query = _Bm25Query(
                    passages_name,
                    lexemes,
                    idf,
                    average_length=max(collection["passage_terms"] / passages, 1.0),
                    k1=self._settings.bm25_k1,
                    b=self._settings.bm25_b,
                    limit=limit,
                    conditions=conditions,
                )
                rows = await query.run(conn)
        return [_hit(row, float(row["score"])) for row in rows]


class _Bm25Query:
    """BM25 over the GIN-indexed tsvectors, with MaxScore pruning (Turtle & Flood, 1995).

    A term adds at most idf * (k1 + 1) to a passage's score. A first pass scores the
    passages that contain the rarest term; the last of its top `limit` scores is a bar
    (theta). The commonest terms whose bounds together stay below theta cannot lift a
    passage that has none of the other terms into the top `limit`, so the final pass only
    considers passages with at least one of the other ("essential") terms, scoring them on
    every term. The result is exactly that of scoring every matching passage, without
    touching the passages that match only very common terms.
    """

    def __init__(
        self,
        passages_name: str,
        lexemes: list[str],
        idf: list[float],
        *,
        average_length: float,
        k1: float,
        b: float,
        limit: int,
        conditions: Filter,
    ) -> None:
        self._passages = passages_name
        self._lexemes, self._idf = lexemes, idf
        self._average_length, self._k1, self._b = average_length, k1, b
        self._limit = limit
        self._conditions = conditions

    def _bound(self, index: int) -> float:
        return self._idf[index] * (self._k1 + 1)

    async def run(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        by_bound = sorted(range(len(self._lexemes)), key=self._bound)
        first = await self._score(conn, [by_bound[-1]])
        if len(first) < self._limit or len(by_bound) == 1:
            return await self._score(conn, by_bound) if len(by_bound) > 1 else first
        theta = float(first[-1]["score"])
        non_essential, total = 0, 0.0
        for index in by_bound[:-1]:
            total += self._bound(index)
            if total >= theta:
                break
            non_essential += 1
        essential = by_bound[non_essential:]
        if essential == by_bound[-1:]:
            return first
        return await self._score(conn, essential)

    async def _score(self, conn: asyncpg.Connection, candidates: list[int]) -> list[asyncpg.Record]:
        """The top passages among those containing one of the `candidates` terms, scored on
        every query term."""
        params = SqlParameters()
        lexemes = params.add(self._lexemes)
        idf = params.add(self._idf)
        any_term = params.add(" | ".join(tsquery_literal(self._lexemes[i]) for i in candidates))
        k1, b = params.add(self._k1), params.add(self._b)
        average = params.add(self._average_length)
        where = to_sql(self._conditions, "p.metadata", params)
        tf = "cardinality(t.positions)::float8"
        return list(
            await conn.fetch(
                f"WITH weights AS (SELECT * FROM unnest({lexemes}::text[], {idf}::float8[])"
                " AS w(lexeme, idf))"
                " SELECT p.document_id, p.passage_index, p.text, p.metadata,"
                f" (SELECT sum(w.idf * {tf} * ({k1}::float8 + 1) / ({tf} + {k1}::float8"
                f" * (1 - {b}::float8 + {b}::float8 * length(p.terms) / {average}::float8)))"
                "  FROM unnest(p.terms) AS t JOIN weights AS w ON w.lexeme = t.lexeme) AS score"
                f" FROM {self._passages} AS p"
                f" WHERE p.terms @@ {any_term}::tsquery AND {where}"
                " ORDER BY score DESC, p.document_id, p.passage_index"
                f" LIMIT {params.add(self._limit)}",
                *params.values,
            )
        )


def _collection_ddl(collection_id: int, spec: CollectionSpec, text_search_config: str) -> str:
    documents_name = documents_table(collection_id)
    passages_name = passages_table(collection_id)
    return f"""
        CREATE TABLE {documents_name} (
            id text PRIMARY KEY,
            text text NOT NULL,
            metadata jsonb NOT NULL,
            passage_count integer NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX {documents_name}_metadata ON {documents_name}
            USING gin (metadata jsonb_path_ops);
        CREATE TABLE {passages_name} (
            document_id text NOT NULL REFERENCES {documents_name} (id) ON DELETE CASCADE,
            passage_index integer NOT NULL,
            text text NOT NULL,
            metadata jsonb NOT NULL,
            embedding vector({int(spec.dimensions)}) NOT NULL,
            terms tsvector GENERATED ALWAYS AS
                (to_tsvector('{text_search_config}'::regconfig, text)) STORED,
            PRIMARY KEY (document_id, passage_index)
        );
        CREATE INDEX {passages_name}_embedding ON {passages_name}
            USING hnsw (embedding vector_cosine_ops)
            WITH (m = {int(spec.hnsw_m)}, ef_construction = {int(spec.hnsw_ef_construction)});
        CREATE INDEX {passages_name}_terms ON {passages_name} USING gin (terms);
        CREATE INDEX {passages_name}_metadata ON {passages_name}
            USING gin (metadata jsonb_path_ops);
    """


def _metadata(raw: str | None) -> Metadata:
    value: Any = json.loads(raw) if raw else {}
    return dict(value)


def _hit(row: asyncpg.Record, score: float) -> PassageHit:
    return PassageHit(
        document_id=row["document_id"],
        passage_index=row["passage_index"],
        text=row["text"],
        metadata=_metadata(row["metadata"]),
        score=float(score),
    )


def _collection_info(row: asyncpg.Record) -> CollectionInfo:
    return CollectionInfo(
        spec=CollectionSpec(
            name=row["name"],
            dimensions=row["dimensions"],
            embedding_model=row["embedding_model"],
            hnsw_m=row["hnsw_m"],
            hnsw_ef_construction=row["hnsw_ef_construction"],
        ),
        document_count=int(row["document_count"]),
        passage_count=int(row["passage_count"]),
        created_at=row["created_at"],
    )
