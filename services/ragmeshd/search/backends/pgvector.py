"""The PostgreSQL + pgvector backend.

Schema: the catalog table search_collections (from the migrations) and, per collection,
search_documents_<id> (a document's text and metadata), search_passages_<id> (each
passage's text, a copy of the metadata for filtering in the same scan, its vector, and its
keyword terms from ragmeshd/search/keywords.py) and search_terms_<id> (each term's document
frequency). Passage vectors have an HNSW index (vector_cosine_ops) and term arrays a GIN
index. Dense search is an HNSW scan with iterative scanning, so a filter that rejects
candidates does not shrink the result below the limit; keyword search is exact BM25 with
MaxScore pruning (backends/bm25_planner.py). Every write is one transaction that also locks
and updates the collection's counters and term statistics (backends/pg_keywords.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import asyncpg
import numpy as np

from ragmeshd.postgres.database import open_database
from ragmeshd.postgres.transaction_pool import acquire_snapshot
from ragmeshd.runtime import metrics
from ragmeshd.search import migrate
from ragmeshd.search.backends.base import (
    CollectionExistsError,
    CollectionNotFoundError,
    SearchBackend,
    StoreUnavailableError,
)
from ragmeshd.search.backends.bm25_planner import Bm25Query, read_statistics
from ragmeshd.search.backends.pg_connection import search_pool_spec, translated_errors
from ragmeshd.search.backends.pg_keyword_index import (
    KeywordIndexes,
    changes_table,
    index_groups,
    record_changes,
)
from ragmeshd.search.backends.pg_keywords import (
    count_passages,
    forget_passages,
    terms_table,
)
from ragmeshd.search.backends.pg_schema import collection_ddl, documents_table, passages_table
from ragmeshd.search.backends.pg_search import (
    dense_hits,
    hit,
    hybrid_hits,
    keyword_hits,
    metadata,
)
from ragmeshd.search.filters import SqlParameters, to_sql
from ragmeshd.search.fusion import fuse_passages
from ragmeshd.search.keywords import passage_terms, query_terms
from ragmeshd.search.records import (
    CollectionInfo,
    CollectionSpec,
    DocumentPage,
    DocumentSummary,
    Filter,
    FusionParams,
    PassageHit,
    PreparedDocument,
    RankedHit,
    StoredDocument,
)
from ragmeshd.settings import SearchSettings

_log = logging.getLogger("ragmesh.search.pgvector")

# Passages per COPY statement of a write: each statement must end inside
# search.pg.statement_timeout_ms (8 s), and inserting into the HNSW index costs ~4 ms a passage
# on 2 cores (512 passages 2.3 s with 20,000 indexed), so a large document goes in several
# statements of one transaction, still all or nothing.
COPY_CHUNK_PASSAGES = 512

_COLLECTION_COLUMNS = (
    "id, name, dimensions, embedding_model, hnsw_m, hnsw_ef_construction,"
    " created_at, document_count,"
    " passage_count, passage_terms, write_version"
)


class PgVectorBackend(SearchBackend):
    name = "pgvector"

    def __init__(self, dsn: str, settings: SearchSettings) -> None:
        self._dsn = dsn
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        self._keyword_indexes = KeywordIndexes(k1=settings.bm25_k1, b=settings.bm25_b)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        s = self._settings
        self._pool = pool = await open_database(
            self._dsn,
            migrate.MIGRATIONS,
            search_pool_spec(s),
            connect_attempts=s.pg.connect_attempts,
            connect_backoff_base_s=s.pg.connect_backoff_base_s,
            migrate_dsn=s.pg.migrate_dsn,
        )
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
        timeout = self._settings.pg.health_timeout_s
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
        with translated_errors("creating a collection"):
            async with self.pool.acquire() as conn, conn.transaction():
                try:
                    collection_id = await conn.fetchval(
                        "INSERT INTO search_collections (name, dimensions, embedding_model,"
                        " hnsw_m, hnsw_ef_construction)"
                        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                        spec.name,
                        spec.dimensions,
                        spec.embedding_model,
                        spec.hnsw_m,
                        spec.hnsw_ef_construction,
                    )
                except asyncpg.UniqueViolationError:
                    raise CollectionExistsError(spec.name) from None
                await conn.execute(collection_ddl(collection_id, spec))
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
                    f" {documents_table(collection_id)}, {terms_table(collection_id)},"
                    f" {changes_table(collection_id)}"
                )
            self._keyword_indexes.forget(int(collection_id))

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
        passages = [(d, p) for d in documents for p in d.passages]
        counted = [passage_terms(p.text) for _, p in passages]
        with translated_errors("storing documents"):
            async with self.pool.acquire() as conn, conn.transaction():
                collection = await self._collection_row(conn, name, for_update=True)
                documents_name = documents_table(collection["id"])
                passages_name = passages_table(collection["id"])
                terms_name = terms_table(collection["id"])
                removed = await forget_passages(conn, passages_name, terms_name, ids)
                keywords = await count_passages(conn, terms_name, counted)
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
                records = [
                    (
                        d.id, p.index, p.text, json.dumps({**d.metadata, **p.metadata}),
                        p.vector,
                        k.terms, k.frequencies, k.length,
                    )
                    for (d, p), k in zip(passages, keywords, strict=True)
                ]  # fmt: skip
                for start in range(0, len(records), COPY_CHUNK_PASSAGES):
                    await conn.copy_records_to_table(
                        passages_name,
                        columns=[
                            "document_id", "passage_index", "text", "metadata", "embedding",
                            "terms", "frequencies", "length",
                        ],
                        records=records[start : start + COPY_CHUNK_PASSAGES],
                    )  # fmt: skip
                await conn.execute(
                    "UPDATE search_collections SET document_count = document_count + $2,"
                    " passage_count = passage_count + $3, passage_terms = passage_terms + $4,"
                    " write_version = $5 WHERE id = $1",
                    collection["id"],
                    len(documents) - len(replaced),
                    len(passages) - removed.passages,
                    sum(k.length for k in keywords) - removed.length,
                    collection["write_version"] + 1,
                )
                await record_changes(
                    conn, collection["id"], collection["write_version"] + 1, list(ids)
                )

    async def delete_documents(self, name: str, ids: Sequence[str]) -> int:
        with translated_errors("deleting documents"):
            async with self.pool.acquire() as conn, conn.transaction():
                collection = await self._collection_row(conn, name, for_update=True)
                removed = await forget_passages(
                    conn,
                    passages_table(collection["id"]),
                    terms_table(collection["id"]),
                    list(ids),
                )
                deleted = await conn.fetch(
                    f"DELETE FROM {documents_table(collection['id'])}"
                    " WHERE id = ANY($1::text[]) RETURNING id",
                    list(ids),
                )
                await conn.execute(
                    "UPDATE search_collections SET document_count = document_count - $2,"
                    " passage_count = passage_count - $3, passage_terms = passage_terms - $4,"
                    " write_version = $5 WHERE id = $1",
                    collection["id"],
                    len(deleted),
                    removed.passages,
                    removed.length,
                    collection["write_version"] + 1,
                )
                await record_changes(
                    conn, collection["id"], collection["write_version"] + 1, list(ids)
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
            row["id"], row["text"], metadata(row["metadata"]), row["passage_count"]
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

    async def list_documents(
        self, name: str, source_prefix: str, page_token: str, limit: int
    ) -> DocumentPage:
        # Keyset paging in id order: the token is the last id of the page before.
        with translated_errors("listing documents"):
            async with self.pool.acquire() as conn:
                collection = await self._collection_row(conn, name)
                rows = await conn.fetch(
                    "SELECT id, metadata, passage_count"
                    f" FROM {documents_table(collection['id'])}"
                    " WHERE id > $1 AND ($2 = '' OR starts_with(metadata->>'source', $2))"
                    " ORDER BY id LIMIT $3",
                    page_token,
                    source_prefix,
                    limit + 1,
                )
        documents = [
            DocumentSummary(row["id"], metadata(row["metadata"]), row["passage_count"])
            for row in rows[:limit]
        ]
        next_token = documents[-1].id if len(rows) > limit else ""
        return DocumentPage(documents, next_token)

    # -- search ------------------------------------------------------------------------

    async def dense_search(
        self, name: str, vector: np.ndarray, limit: int, conditions: Filter
    ) -> list[PassageHit]:
        with translated_errors("a dense search"):
            async with self.pool.acquire() as conn:
                collection = await self._collection_row(conn, name)
                return await dense_hits(
                    conn, passages_table(collection["id"]), vector, limit, conditions
                )

    async def keyword_search(
        self, name: str, text: str, limit: int, conditions: Filter
    ) -> list[PassageHit]:
        terms = query_terms(text)
        if not terms:
            return []
        with translated_errors("a keyword search"):
            # Behind a pooler, the index's catch-up needs this transaction to be its snapshot.
            async with acquire_snapshot(self.pool) as conn:
                collection = await self._collection_row(conn, name)
                passages = int(collection["passage_count"])
                if not passages:
                    return []
                indexed, groups = index_groups(conditions)
                if indexed:
                    ranked = await self._keyword_indexes.search(
                        self.pool, conn, collection, terms, limit, groups
                    )
                    if ranked is not None:
                        return await keyword_hits(conn, passages_table(collection["id"]), ranked)
                statistics = await read_statistics(
                    conn,
                    terms_table(collection["id"]),
                    terms,
                    passages,
                    int(collection["passage_terms"]),
                )
                query = Bm25Query(
                    passages_table(collection["id"]),
                    statistics,
                    k1=self._settings.bm25_k1,
                    b=self._settings.bm25_b,
                    limit=limit,
                    conditions=conditions,
                )
                rows = await query.run(conn)
        return [hit(row, float(row["score"])) for row in rows]

    async def hybrid_search(
        self,
        name: str,
        vector: np.ndarray,
        text: str,
        limit: int,
        conditions: Filter,
        fusion: FusionParams,
    ) -> list[RankedHit]:
        """Without a filter (or with only the key's document groups, filtered in both
        rankings before their top k), and with the replica's keyword index ready: one
        connection, one collection read and one statement for both (pg_search.hybrid_hits)."""
        terms = query_terms(text)
        indexed, groups = index_groups(conditions)
        if indexed and terms:
            with translated_errors("a hybrid search"):
                async with acquire_snapshot(self.pool) as conn:
                    collection = await self._collection_row(conn, name)
                    ranked = (
                        await self._keyword_indexes.search(
                            self.pool, conn, collection, terms, limit, groups
                        )
                        if collection["passage_count"]
                        else []
                    )
                    if ranked is not None:
                        dense, keyword = await hybrid_hits(
                            conn,
                            passages_table(collection["id"]),
                            vector,
                            limit,
                            ranked,
                            conditions,
                        )
                        return fuse_passages(dense, keyword, fusion)[:limit]
        return await super().hybrid_search(name, vector, text, limit, conditions, fusion)


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
