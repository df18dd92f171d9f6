"""BM25 keyword search over a collection's passages table, exactly, with MaxScore-style
pruning.

Each passage row holds its distinct terms as ids (`terms integer[]`, GIN-indexed), their
frequencies (`frequencies integer[]`, same order) and its length in terms, all from
ragmeshd/search/keywords.py. The collection's term table gives each term's document
frequency, the highest frequency it has in any passage and the shortest passage it occurs in;
the catalog row the passage count and total length. Every write keeps these in the same
transaction (ragmeshd/search/backends/pg_keywords.py): a query reads them instead of counting.

Pruning (after MaxScore, Turtle & Flood 1995): a term can add at most its bound to a passage's
score: its BM25 weight at its highest frequency in the shortest passage it occurs in (writes
only ever raise the one and lower the other, so after deletions the bound is still an upper
bound). A first pass scores the passages that contain the rarest terms (as few as can fill
`limit`); the last of its top `limit` scores is a bar, theta. A passage can only reach theta
if the bounds of the query terms it contains add up to theta, so the final pass considers
only passages that contain one of the minimal term sets whose bounds reach theta (a GIN
`@>` test each), and scores them on every term. The result is exactly that of scoring every
matching passage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ragmeshd.search.filters import SqlParameters, to_sql
from ragmeshd.search.keywords import bm25_idf, bm25_term_bound
from ragmeshd.search.records import Filter

# More minimal sets than this and the final pass takes MaxScore's essential terms.
MAX_TERM_SETS = 64
# What reading one posting from the GIN index costs relative to scoring one passage row.
_POSTING_COST = 0.05


@dataclass(frozen=True)
class TermStatistics:
    """One query term as the collection knows it."""

    term: str
    id: int
    passages: int  # document frequency
    max_frequency: int
    min_length: int


@dataclass(frozen=True)
class Bm25Statistics:
    """What BM25 needs besides the passages: the query's terms that occur, and the
    collection's passage count and average length."""

    terms: list[TermStatistics]
    passages: int
    average_length: float

    def idf(self) -> list[float]:
        return [bm25_idf(t.passages, self.passages) for t in self.terms]


async def read_statistics(
    conn: asyncpg.Connection, terms_table: str, terms: list[str], passages: int, total_length: int
) -> Bm25Statistics:
    """The query terms that occur in the collection, with their statistics (one index lookup
    each)."""
    rows = await conn.fetch(
        f"SELECT term, id, passages, max_frequency, min_length FROM {terms_table}"
        " WHERE term = ANY($1::text[]) AND passages > 0",
        terms,
    )
    found = {
        row["term"]: TermStatistics(
            row["term"],
            int(row["id"]),
            int(row["passages"]),
            int(row["max_frequency"]),
            int(row["min_length"]),
        )
        for row in rows
    }
    return Bm25Statistics(
        [found[term] for term in terms if term in found],
        passages,
        max(total_length / passages, 1.0) if passages else 1.0,
    )


def sufficient_sets(bounds: Sequence[float], theta: float) -> list[list[int]] | None:
    """The minimal sets of term indexes whose bounds add up to at least theta (a passage with
    none of them complete cannot reach theta); None when there are more than MAX_TERM_SETS."""
    order = sorted(range(len(bounds)), key=lambda i: -bounds[i])
    remaining = [0.0] * (len(order) + 1)
    for position in range(len(order) - 1, -1, -1):
        remaining[position] = remaining[position + 1] + bounds[order[position]]
    found: list[list[int]] = []

    def extend(position: int, chosen: list[int], total: float) -> bool:
        for next_position in range(position, len(order)):
            if total + remaining[next_position] < theta:
                return True  # even every remaining term cannot reach theta
            index = order[next_position]
            if total + bounds[index] >= theta:
                # Adding the smallest term so far reached theta: dropping any earlier (larger)
                # one would not, so the set is minimal.
                found.append([*chosen, index])
                if len(found) > MAX_TERM_SETS:
                    return False
            elif not extend(next_position + 1, [*chosen, index], total + bounds[index]):
                return False
        return True

    return found if extend(0, [], 0.0) else None


class Bm25Query:
    """One keyword query's plan and its SQL over the GIN-indexed term id arrays."""

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
        self._stats = statistics.terms
        self._terms = [t.id for t in statistics.terms]
        self._idf = statistics.idf()
        self._average_length = statistics.average_length
        self._k1, self._b = k1, b
        self._limit = limit
        self._conditions = conditions
        self._bounds = [
            bm25_term_bound(
                idf, t.max_frequency, t.min_length, k1=k1, b=b, avg_length=statistics.average_length
            )
            for t, idf in zip(statistics.terms, self._idf, strict=True)
        ]

    async def run(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        if not self._terms:
            return []
        every = sorted(range(len(self._terms)), key=lambda i: self._stats[i].passages)
        first_terms: list[int] = []
        covered = 0
        for index in every:  # the rarest terms until they can fill the limit
            first_terms.append(index)
            covered += self._stats[index].passages
            if covered >= self._limit:
                break
        first = await self.score(conn, [[i] for i in first_terms])
        if len(first) < self._limit:
            if len(first_terms) == len(every):
                return first
            return await self.score(conn, [[i] for i in every])
        theta = float(first[-1]["score"])
        # MaxScore's essential terms: all but the commonest whose bounds stay below theta.
        by_bound = sorted(range(len(self._terms)), key=lambda i: self._bounds[i])
        non_essential, total = 0, 0.0
        for index in by_bound:
            total += self._bounds[index]
            if total >= theta:
                break
            non_essential += 1
        sets = [[i] for i in by_bound[non_essential:]]
        # The minimal sets are a narrower test, but GIN reads every posting list of a set:
        # take them when the passages read (heap) plus postings read (index, far cheaper)
        # come out below the essential terms' passages.
        minimal = sufficient_sets(self._bounds, theta)
        if minimal is not None and self._cost(minimal) < self._cost(sets):
            sets = minimal
        if all(any(i in first_terms for i in s) for s in sets):
            return first  # every passage that can reach theta was in the first pass
        return await self.score(conn, sets)

    def _cost(self, term_sets: Sequence[Sequence[int]]) -> float:
        frequencies = [[self._stats[i].passages for i in s] for s in term_sets]
        heap = sum(min(f) for f in frequencies)
        index = sum(sum(f) for f in frequencies if len(f) > 1)
        return heap + index * _POSTING_COST

    async def score(
        self, conn: asyncpg.Connection, term_sets: Sequence[Sequence[int]]
    ) -> list[asyncpg.Record]:
        """The top passages among those containing every term of one of `term_sets` (term
        indexes), scored on every query term (ties broken by document id, passage index)."""
        params = SqlParameters()
        k1 = params.add(self._k1)
        b = params.add(self._b)
        # Per passage, once: the length normalisation and each query term's frequency (its
        # position in the short id array); OFFSET 0 keeps the planner from inlining them.
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
        singles = [self._terms[s[0]] for s in term_sets if len(s) == 1]
        tests = [f"p.terms && {params.add(singles)}::integer[]"] if singles else []
        tests += [
            f"p.terms @> {params.add([self._terms[i] for i in s])}::integer[]"
            for s in term_sets
            if len(s) > 1
        ]
        where = to_sql(self._conditions, "p.metadata", params)
        return list(
            await conn.fetch(
                "SELECT p.document_id, p.passage_index, p.text, p.metadata, s.score"
                f" FROM {self._passages} AS p"
                f" CROSS JOIN LATERAL (SELECT {' + '.join(parts)} AS score"
                f" FROM (SELECT {', '.join(columns)} OFFSET 0) AS f OFFSET 0) AS s"
                f" WHERE ({' OR '.join(tests)}) AND {where}"
                " ORDER BY s.score DESC, p.document_id, p.passage_index"
                f" LIMIT {params.add(self._limit)}",
                *params.values,
            )
        )
