"""Keyword index maintenance for the pgvector backend, done inside each write's transaction.

A passage row stores its terms (services/search/keywords.py) as two aligned arrays, terms
sorted, plus its length in terms. The collection's term table `search_terms_<id>` holds each
term's document frequency (how many passages contain it), and the catalog row the passage
count and total length: BM25's statistics, so a query reads them instead of counting. Every
write holds the collection row's lock (FOR UPDATE), so the counts cannot race.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from services.search.keywords import passage_terms


def terms_table(collection_id: int) -> str:
    return f"search_terms_{int(collection_id)}"


@dataclass(frozen=True)
class KeywordColumns:
    """A passage's keyword columns: distinct terms (sorted), their frequencies, its length."""

    terms: list[str]
    frequencies: list[int]
    length: int


def keyword_columns(text: str) -> KeywordColumns:
    counted = passage_terms(text)
    ordered = sorted(counted.frequencies)
    return KeywordColumns(ordered, [counted.frequencies[t] for t in ordered], counted.length)


@dataclass(frozen=True)
class Removed:
    """What the removed passages took out of the collection's counters."""

    passages: int
    length: int


async def forget_passages(
    conn: asyncpg.Connection, passages_table: str, terms_name: str, document_ids: Sequence[str]
) -> Removed:
    """Take the passages of `document_ids` (about to be deleted) out of the term statistics."""
    ids = list(document_ids)
    await conn.execute(
        f"UPDATE {terms_name} AS t SET passages = t.passages - gone.passages FROM ("
        f" SELECT term, count(*) AS passages FROM {passages_table}, unnest(terms) AS term"
        " WHERE document_id = ANY($1::text[]) GROUP BY term) AS gone"
        " WHERE t.term = gone.term",
        ids,
    )
    row = await conn.fetchrow(
        f"SELECT count(*) AS passages, coalesce(sum(length), 0) AS length FROM {passages_table}"
        " WHERE document_id = ANY($1::text[])",
        ids,
    )
    return Removed(int(row["passages"]), int(row["length"]))


async def count_passages(
    conn: asyncpg.Connection, terms_name: str, columns: Sequence[KeywordColumns]
) -> None:
    """Add newly written passages to the term statistics."""
    frequencies: Counter[str] = Counter()
    for passage in columns:
        frequencies.update(passage.terms)
    if not frequencies:
        return
    terms = sorted(frequencies)  # a fixed order: concurrent writers cannot deadlock
    await conn.execute(
        f"INSERT INTO {terms_name} AS t (term, passages)"
        " SELECT * FROM unnest($1::text[], $2::integer[])"
        " ON CONFLICT (term) DO UPDATE SET passages = t.passages + excluded.passages",
        terms,
        [frequencies[t] for t in terms],
    )


def keyword_ddl(passages_table: str, terms_name: str) -> str:
    """The term table and the passages' GIN index (the columns are in the passages DDL)."""
    return f"""
        CREATE TABLE {terms_name} (
            term text PRIMARY KEY,
            passages integer NOT NULL CHECK (passages >= 0)
        );
        CREATE INDEX {passages_table}_terms ON {passages_table} USING gin (terms);
    """
