"""Keyword index maintenance for the pgvector backend, done inside each write's transaction.

The collection's term table `search_terms_<id>` gives every term (ragmeshd/search/keywords.py)
a small integer id and holds its document frequency (how many passages contain it), its
highest frequency in a passage and the shortest passage it occurs in (for pruning); the
catalog row holds the passage count and total length. These are BM25's statistics, so a
query reads them instead of counting. A passage row stores its distinct term ids (sorted) and
their frequencies as two aligned integer arrays kept uncompressed in the row (STORAGE PLAIN:
scoring reads them for every candidate, and a compressed or out-of-line array would be
decompressed on every read), plus its length in terms. Every write holds the collection
row's lock (FOR UPDATE), so the counts and ids cannot race.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ragmeshd.search.keywords import PassageTerms


def terms_table(collection_id: int) -> str:
    return f"search_terms_{int(collection_id)}"


@dataclass(frozen=True)
class KeywordColumns:
    """A passage's keyword columns: distinct term ids (sorted), their frequencies, length."""

    terms: list[int]
    frequencies: list[int]
    length: int


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
        f" SELECT term_id, count(*) AS passages FROM {passages_table}, unnest(terms) AS term_id"
        " WHERE document_id = ANY($1::text[]) GROUP BY term_id) AS gone"
        " WHERE t.id = gone.term_id",
        ids,
    )
    row = await conn.fetchrow(
        f"SELECT count(*) AS passages, coalesce(sum(length), 0) AS length FROM {passages_table}"
        " WHERE document_id = ANY($1::text[])",
        ids,
    )
    return Removed(int(row["passages"]), int(row["length"]))


async def count_passages(
    conn: asyncpg.Connection, terms_name: str, counted: Sequence[PassageTerms]
) -> list[KeywordColumns]:
    """Add newly written passages to the term statistics (new terms get ids); their keyword
    columns, in the same order."""
    frequencies: Counter[str] = Counter()
    max_frequency: dict[str, int] = {}
    min_length: dict[str, int] = {}
    for passage in counted:
        frequencies.update(passage.frequencies.keys())
        for term, n in passage.frequencies.items():
            max_frequency[term] = max(max_frequency.get(term, 0), n)
            min_length[term] = min(min_length.get(term, passage.length), passage.length)
    ids: dict[str, int] = {}
    if frequencies:
        terms = sorted(frequencies)  # a fixed order
        # New terms first (only they take an id from the sequence), then every count.
        await conn.execute(
            f"INSERT INTO {terms_name} (term, passages, max_frequency, min_length)"
            " SELECT fresh.term, 0, 0, 2147483647 FROM unnest($1::text[]) AS fresh(term)"
            f" WHERE NOT EXISTS (SELECT 1 FROM {terms_name} AS t WHERE t.term = fresh.term)",
            terms,
        )
        rows = await conn.fetch(
            f"UPDATE {terms_name} AS t SET passages = t.passages + added.passages,"
            " max_frequency = greatest(t.max_frequency, added.max_frequency),"
            " min_length = least(t.min_length, added.min_length)"
            " FROM unnest($1::text[], $2::integer[], $3::integer[], $4::integer[])"
            " AS added(term, passages, max_frequency, min_length)"
            " WHERE t.term = added.term RETURNING t.term, t.id",
            terms,
            [frequencies[t] for t in terms],
            [max_frequency[t] for t in terms],
            [min_length[t] for t in terms],
        )
        ids = {row["term"]: int(row["id"]) for row in rows}
    columns = []
    for passage in counted:
        by_id = sorted((ids[term], n) for term, n in passage.frequencies.items())
        columns.append(KeywordColumns([i for i, _ in by_id], [n for _, n in by_id], passage.length))
    return columns


def keyword_ddl(passages_table: str, terms_name: str) -> str:
    """The term table and the passages' GIN index (the columns are in the passages DDL).

    fastupdate is off: with a pending list, the write that finds it full merges all of it
    into the index, and under load one UpsertDocuments at 15,000 passages ran past the
    30 s statement timeout; without it every write pays its own (bounded) share."""
    return f"""
        CREATE TABLE {terms_name} (
            term text PRIMARY KEY,
            id integer GENERATED ALWAYS AS IDENTITY UNIQUE,
            passages integer NOT NULL CHECK (passages >= 0),
            -- Upper bounds for pruning: raised/lowered by writes, never relaxed by deletes.
            max_frequency integer NOT NULL,
            min_length integer NOT NULL
        );
        CREATE INDEX {passages_table}_terms ON {passages_table} USING gin (terms)
            WITH (fastupdate = off);
    """
