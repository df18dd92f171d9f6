"""The pgvector backend's search statements: the HNSW scan, the rows of passages the keyword
index ranked, and both in one round trip for HYBRID.

HYBRID without a filter is one statement: the dense candidates (the same HNSW scan as
DENSE) and the rows of the keyword candidates (ranked by the replica's BM25 index) come
back together, so a hybrid query costs one pooled connection and one collection read instead
of two of each. The rankings are those of DENSE and KEYWORD alone.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import numpy as np

from ragmeshd.search.bm25_index import PassageKey
from ragmeshd.search.filters import SqlParameters, to_sql
from ragmeshd.search.records import Filter, Metadata, PassageHit


def _nearest_sql(
    table: str, params: SqlParameters, vector: np.ndarray, limit: int, conditions: Filter
) -> str:
    """A CTE `nearest`: the HNSW scan's `limit` rows and their cosine distance. The scan
    inside the materialised CTE may return rows slightly out of order (relaxed iterative
    scan); callers order by distance, document id, passage index."""
    query_vector = params.add(vector)
    where = to_sql(conditions, "metadata", params)
    return (
        "WITH nearest AS MATERIALIZED ("
        f" SELECT document_id, passage_index, text, metadata,"
        f" embedding <=> {query_vector} AS distance"
        f" FROM {table} WHERE {where}"
        f" ORDER BY embedding <=> {query_vector} LIMIT {params.add(limit)})"
    )


async def dense_hits(
    conn: asyncpg.Connection, table: str, vector: np.ndarray, limit: int, conditions: Filter
) -> list[PassageHit]:
    params = SqlParameters()
    rows = await conn.fetch(
        _nearest_sql(table, params, vector, limit, conditions)
        + " SELECT * FROM nearest ORDER BY distance, document_id, passage_index",
        *params.values,
    )
    return [hit(row, 1.0 - row["distance"]) for row in rows]


async def keyword_hits(
    conn: asyncpg.Connection, table: str, ranked: list[tuple[PassageKey, float]]
) -> list[PassageHit]:
    """The ranked passages' rows, in rank order (the index holds only their terms)."""
    if not ranked:
        return []
    rows = await conn.fetch(
        "SELECT p.document_id, p.passage_index, p.text, p.metadata"
        f" FROM {table} AS p JOIN unnest($1::text[], $2::integer[])"
        " AS k(document_id, passage_index) USING (document_id, passage_index)",
        [key[0] for key, _ in ranked],
        [key[1] for key, _ in ranked],
    )
    return _in_rank_order(rows, ranked)


async def hybrid_hits(
    conn: asyncpg.Connection,
    table: str,
    vector: np.ndarray,
    limit: int,
    ranked: list[tuple[PassageKey, float]],
    conditions: Filter = (),
) -> tuple[list[PassageHit], list[PassageHit]]:
    """DENSE's `limit` passages (those meeting `conditions`, a key's visibility) and the rows
    of KEYWORD's `ranked` ones (filtered by the same in the index), in one statement."""
    params = SqlParameters()
    nearest = _nearest_sql(table, params, vector, limit, conditions)
    ids = params.add([key[0] for key, _ in ranked])
    indexes = params.add([key[1] for key, _ in ranked])
    rows = await conn.fetch(
        nearest + " SELECT 0 AS part, row_number() OVER"
        " (ORDER BY distance, document_id, passage_index) AS rank,"
        " document_id, passage_index, text, metadata, distance FROM nearest"
        " UNION ALL SELECT 1, 0, p.document_id, p.passage_index, p.text, p.metadata, NULL"
        f" FROM {table} AS p JOIN unnest({ids}::text[], {indexes}::integer[])"
        " AS k(document_id, passage_index) USING (document_id, passage_index)",
        *params.values,
    )
    dense = sorted((row for row in rows if row["part"] == 0), key=lambda row: row["rank"])
    keyword = [row for row in rows if row["part"] == 1]
    return [hit(row, 1.0 - row["distance"]) for row in dense], _in_rank_order(keyword, ranked)


def _in_rank_order(
    rows: list[asyncpg.Record], ranked: list[tuple[PassageKey, float]]
) -> list[PassageHit]:
    by_key = {(row["document_id"], row["passage_index"]): row for row in rows}
    # A passage replaced or deleted after the index was read is left out.
    return [hit(by_key[key], score) for key, score in ranked if key in by_key]


def metadata(raw: str | None) -> Metadata:
    value: Any = json.loads(raw) if raw else {}
    return dict(value)


def hit(row: asyncpg.Record, score: float) -> PassageHit:
    return PassageHit(
        document_id=row["document_id"],
        passage_index=row["passage_index"],
        text=row["text"],
        metadata=metadata(row["metadata"]),
        score=float(score),
    )
