"""BM25 keyword search over a collection's passages table, exactly, with MaxScore pruning.

Each passage row holds its distinct terms as ids (`terms integer[]`, GIN-indexed), their
frequencies (`frequencies integer[]`, same order) and its length in terms, all from
services/search/keywords.py. Document frequencies come from the collection's term table and
the passage count and total length from its catalog row, all kept up to date by every write
in the same transaction (services/search/backends/pg_keywords.py): a query reads them instead
of counting.

MaxScore (Turtle & Flood, 1995): a term adds at most idf * (k1 + 1) to a passage's score. A
first pass scores the passages that contain the rarest terms (as few as can fill `limit`);
the last of its top `limit` scores is a bar (theta). The commonest terms whose bounds
together stay below theta cannot lift a passage that has none of the other terms into the
top `limit`, so the final pass only considers passages with at least one of the other
("essential") terms, scoring them on every term. The result is exactly that of scoring every
matching passage, without touching the passages that match only very common terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.search.filters import SqlParameters, to_sql
from services.search.keywords import bm25_idf
from services.search.records import Filter


@dataclass(frozen=True)
class Bm25Statistics:
    """What BM25 needs besides the passages: the query's terms with their document
    frequencies, and the collection's passage count and average length."""

    terms: list[str]
    term_ids: list[int]
    document_frequencies: list[int]
    passages: int
    average_length: float

    def idf(self) -> list[float]:
        return [bm25_idf(df, self.passages) for df in self.document_frequencies]


async def read_statistics(
    conn: asyncpg.Connection, terms_table: str, terms: list[str], passages: int, total_length: int
) -> Bm25Statistics:
    """The query terms that occur in the collection, with their document frequencies (one
    index lookup each)."""
    rows = await conn.fetch(
        f"SELECT term, id, passages FROM {terms_table}"
        " WHERE term = ANY($1::text[]) AND passages > 0",
        terms,
    )
    found = {row["term"]: (int(row["id"]), int(row["passages"])) for row in rows}
    present = [term for term in terms if term in found]
    return Bm25Statistics(
        present,
        [found[term][0] for term in present],
        [found[term][1] for term in present],
        passages,
        max(total_length / passages, 1.0) if passages else 1.0,
    )


class Bm25Query:
    """One keyword query's plan and its SQL: MaxScore over the GIN-indexed term arrays."""

    def __init__(
        self,
        passages_table: str,
        statistics: Bm25Statistics,
        *,
        k1: float,
        b: float,
        limit: int,
        conditions: Filter,
    ) -> None:
        self._passages = passages_table
        self._terms = statistics.term_ids
        self._frequencies = statistics.document_frequencies
        self._idf = statistics.idf()
        self._average_length = statistics.average_length
        self._k1, self._b = k1, b
        self._limit = limit
        self._conditions = conditions

    def _bound(self, index: int) -> float:
        return self._idf[index] * (self._k1 + 1)

    async def run(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        if not self._terms:
            return []
        every = sorted(range(len(self._terms)), key=self._bound)  # commonest first
        first_terms: list[int] = []
        covered = 0
        for index in reversed(every):  # the rarest terms until they can fill the limit
            first_terms.append(index)
            covered += self._frequencies[index]
            if covered >= self._limit:
                break
        first = await self.score(conn, first_terms)
        if len(first) < self._limit:
            return first if len(first_terms) == len(every) else await self.score(conn, every)
        theta = float(first[-1]["score"])
        non_essential, total = 0, 0.0
        for index in every:
            total += self._bound(index)
            if total >= theta:
                break
            non_essential += 1
        essential = every[non_essential:]
        if set(essential) <= set(first_terms):
            return first
        return await self.score(conn, essential)

    async def score(self, conn: asyncpg.Connection, candidates: list[int]) -> list[asyncpg.Record]:
        """The top passages among those containing one of the `candidates` terms, scored on
        every query term (ties broken by document id, then passage index)."""
        params = SqlParameters()
        k1 = params.add(self._k1)
        # Per passage, once: the length normalisation and each query term's frequency (its
        # position in the short id array); OFFSET 0 keeps the planner from inlining them.
        b = params.add(self._b)
        columns = [
            f"{k1}::float8 * (1 - {b}::float8 + {b}::float8 * p.length"
            f" / {params.add(self._average_length)}::float8) AS norm"
        ]
        parts = []
        for index, (term, idf) in enumerate(zip(self._terms, self._idf, strict=True)):
            position = f"array_position(p.terms, {params.add(term)}::integer)"
            columns.append(f"coalesce(p.frequencies[{position}], 0)::float8 AS tf{index}")
            parts.append(
                f"{params.add(idf)}::float8 * f.tf{index} * ({k1}::float8 + 1)"
                f" / (f.tf{index} + f.norm)"
            )
        any_term = params.add([self._terms[i] for i in candidates])
        where = to_sql(self._conditions, "p.metadata", params)
        return list(
            await conn.fetch(
                "SELECT p.document_id, p.passage_index, p.text, p.metadata,"
                f" {' + '.join(parts)} AS score"
                f" FROM {self._passages} AS p"
                f" CROSS JOIN LATERAL (SELECT {', '.join(columns)} OFFSET 0) AS f"
                f" WHERE p.terms && {any_term}::integer[] AND {where}"
                " ORDER BY score DESC, p.document_id, p.passage_index"
                f" LIMIT {params.add(self._limit)}",
                *params.values,
            )
        )
