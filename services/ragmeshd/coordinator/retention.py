"""Retention of interactions: they hold every user's questions and answers, so an operator
deletes those older than a limit (`ragmesh db purge-interactions`, the coordinator's
`interactions_retention_days` setting)."""

from __future__ import annotations

import asyncpg

_COUNT = (
    "SELECT count(*) FROM coordinator_interactions"
    " WHERE created_at < now() - make_interval(secs => $1)"
)
_DELETE = (
    "DELETE FROM coordinator_interactions WHERE created_at < now() - make_interval(secs => $1)"
)


async def count_older_than(conn: asyncpg.Connection, older_than_s: float) -> int:
    """How many interactions were stored more than `older_than_s` seconds ago."""
    count = await conn.fetchval(_COUNT, float(older_than_s))
    return int(count)


async def purge_older_than(conn: asyncpg.Connection, older_than_s: float) -> int:
    """Delete the interactions (with their feedback, kept in the same row) stored more than
    `older_than_s` seconds ago; how many were deleted."""
    status = await conn.execute(_DELETE, float(older_than_s))
    return int(status.split()[-1])
