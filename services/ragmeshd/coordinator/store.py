"""Interactions in PostgreSQL (asyncpg): insert after each Ask, feedback, lookup, export.

The tables are the coordinator's own (ragmeshd/coordinator/migrations), in the same
database as the search service's.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from ragmeshd.coordinator.records import (
    ContextRef,
    ExportFilter,
    Interaction,
    NewInteraction,
    Timings,
    value_score,
)
from ragmeshd.coordinator.routing import Side
from ragmeshd.postgres import pool as pg_pool

_log = logging.getLogger("ragmesh.coordinator.store")

APPLICATION_NAME = "ragmesh-coordinator"

# Driver errors that mean the database is down, restarting or unreachable (search's list), or
# that a statement ran out of time.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    *pg_pool.UNAVAILABLE_ERRORS,
    TimeoutError,
    asyncpg.QueryCanceledError,
)

_COLUMNS = (
    "id, created_at, query, collections, decision, reason, answered_by, model, fallback,"
    " fallback_reason, confidence, context, answer, latency_ms, timings, rating, outcome,"
    " value_score, feedback_at, owner_key_id"
)


class StoreUnavailableError(Exception):
    """The database did not answer; retrying later may succeed."""


class InteractionStore:
    """Reads and writes interactions through a connection pool."""

    def __init__(self, pool: asyncpg.Pool, *, export_page_size: int) -> None:
        self._pool = pool
        self._page_size = export_page_size

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self, timeout_s: float) -> bool:
        """Whether the database answers a trivial query within `timeout_s`."""
        try:
            async with self._pool.acquire(timeout=timeout_s) as conn:
                await conn.fetchval("SELECT 1", timeout=timeout_s)
        except (*UNAVAILABLE_ERRORS, asyncpg.PostgresError):
            return False
        return True

    async def insert(self, interaction: NewInteraction) -> Interaction:
        row = await self._fetchrow(
            f"INSERT INTO coordinator_interactions (id, query, collections, decision, reason,"
            f" answered_by, model, fallback, fallback_reason, confidence, context, answer,"
            f" latency_ms, timings, owner_key_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
            f" $10, $11, $12, $13, $14, $15) RETURNING {_COLUMNS}",
            interaction.id,
            interaction.query,
            interaction.collections,
            interaction.decision.value,
            interaction.reason,
            interaction.answered_by.value,
            interaction.model,
            interaction.fallback,
            interaction.fallback_reason,
            interaction.confidence,
            json.dumps([ref.__dict__ for ref in interaction.context]),
            interaction.answer,
            interaction.timings.total_ms,
            json.dumps(interaction.timings.__dict__),
            interaction.owner_key_id,
        )
        assert row is not None
        return _from_row(row)

    async def get(self, interaction_id: uuid.UUID) -> Interaction | None:
        row = await self._fetchrow(
            f"SELECT {_COLUMNS} FROM coordinator_interactions WHERE id = $1", interaction_id
        )
        return None if row is None else _from_row(row)

    async def set_feedback(
        self, interaction_id: uuid.UUID, rating: int, outcome: str | None
    ) -> tuple[Interaction, int | None] | None:
        """Apply a rating (and an outcome, unless None); returns the interaction and its
        previous rating, or None for an unknown id. Sending the same feedback again changes
        nothing, not even the feedback time."""
        row = await self._fetchrow(
            "WITH previous AS (SELECT id, rating, outcome FROM coordinator_interactions"
            " WHERE id = $1 FOR UPDATE)"
            " UPDATE coordinator_interactions AS i SET rating = $2,"
            " outcome = coalesce($3, previous.outcome), value_score = $4,"
            " feedback_at = CASE WHEN previous.rating IS DISTINCT FROM $2"
            " OR coalesce($3, previous.outcome) <> previous.outcome THEN now()"
            " ELSE i.feedback_at END"
            " FROM previous WHERE i.id = previous.id"
            f" RETURNING {', '.join('i.' + c.strip() for c in _COLUMNS.split(','))},"
            " previous.rating AS previous_rating",
            interaction_id,
            rating,
            outcome,
            value_score(rating),
        )
        if row is None:
            return None
        return _from_row(row), row["previous_rating"]

    async def export(self, selection: ExportFilter) -> AsyncIterator[Interaction]:
        """Matching interactions, oldest first, fetched a page at a time (no long-lived
        transaction or cursor)."""
        sent = 0
        after: tuple[Any, uuid.UUID] | None = None
        while True:
            page = self._page_size
            if selection.limit:
                page = min(page, selection.limit - sent)
                if page <= 0:
                    return
            rows = await self._fetch(*_export_query(selection, after, page))
            for row in rows:
                yield _from_row(row)
            sent += len(rows)
            if len(rows) < page:
                return
            after = (rows[-1]["created_at"], rows[-1]["id"])

    async def _fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        try:
            async with self._pool.acquire() as conn:
                return await conn.fetchrow(query, *args)
        except UNAVAILABLE_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        try:
            async with self._pool.acquire() as conn:
                return list(await conn.fetch(query, *args))
        except UNAVAILABLE_ERRORS as exc:
            raise _unavailable(exc) from exc


def _export_query(
    selection: ExportFilter, after: tuple[Any, uuid.UUID] | None, page: int
) -> tuple[Any, ...]:
    """One export page's query and its parameters."""
    params: list[Any] = []

    def add(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    conditions = ["TRUE"]
    if selection.ratings:
        conditions.append(f"rating = ANY({add(list(selection.ratings))}::smallint[])")
    if selection.start is not None:
        conditions.append(f"created_at >= {add(selection.start)}")
    if selection.end is not None:
        conditions.append(f"created_at < {add(selection.end)}")
    if after is not None:
        conditions.append(f"(created_at, id) > ({add(after[0])}, {add(after[1])})")
    query = (
        f"SELECT {_COLUMNS} FROM coordinator_interactions WHERE {' AND '.join(conditions)}"
        f" ORDER BY created_at, id LIMIT {add(page)}"
    )
    return (query, *params)


def _unavailable(exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"the interactions database is unreachable ({type(exc).__name__}); retry shortly"
    )


def _from_row(row: asyncpg.Record) -> Interaction:
    return Interaction(
        id=row["id"],
        created_at=row["created_at"],
        query=row["query"],
        collections=list(row["collections"]),
        decision=Side(row["decision"]),
        reason=row["reason"],
        answered_by=Side(row["answered_by"]),
        model=row["model"],
        fallback=row["fallback"],
        fallback_reason=row["fallback_reason"],
        confidence=row["confidence"],
        context=[ContextRef(**ref) for ref in json.loads(row["context"])],
        answer=row["answer"],
        timings=Timings(**json.loads(row["timings"])),
        rating=row["rating"],
        outcome=row["outcome"],
        value_score=row["value_score"],
        feedback_at=row["feedback_at"],
        owner_key_id=row["owner_key_id"],
    )
