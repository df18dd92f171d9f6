"""Opening a service's database at start-up, the same way for every service that keeps
tables in PostgreSQL: connect (retried while the server comes up), apply the service's
pending migrations on that connection, then open the pool its requests use.

The migrations' connection may go elsewhere than the pool (pg.migrate_dsn): they hold a
session advisory lock (migrations.py), which a transaction-pooling PgBouncer would lose
between transactions, so behind one they connect to the database itself."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import asyncpg

from ragmeshd.postgres.migrations import MigrationSet
from ragmeshd.postgres.pool import connect_with_retries, create_pool
from ragmeshd.runtime.redaction import redact

_log = logging.getLogger("ragmesh.postgres")


@dataclass(frozen=True)
class PoolSpec:
    """The pool a service asks for: its name in pg_stat_activity, its size, the statement
    timeout and any other session settings, a per-connection initialiser, and whether its DSN
    is a PgBouncer in transaction mode (pool.create_pool)."""

    application_name: str
    min_size: int
    max_size: int
    statement_timeout_ms: int
    server_settings: Mapping[str, str] = field(default_factory=dict)
    init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None
    transaction_pooling: bool = False


async def open_database(
    dsn: str,
    migrations: MigrationSet,
    pool: PoolSpec,
    *,
    connect_attempts: int,
    connect_backoff_base_s: float,
    migrate_dsn: str = "",
) -> asyncpg.Pool:
    """connect → migrate → pool. The migrations connect to `migrate_dsn` when given, else to
    `dsn`. Raises DatabaseConnectError when the server cannot be reached after every attempt,
    MigrationError when a migration fails."""
    conn = await connect_with_retries(
        migrate_dsn or dsn, attempts=connect_attempts, backoff_base_s=connect_backoff_base_s
    )
    try:
        applied = await migrations.upgrade(conn)
    finally:
        await conn.close()
    _log.info(
        "database ready",
        extra={
            "dsn": redact(dsn),
            "migrate_dsn": redact(migrate_dsn or dsn),
            "schema": migrations.table,
            "migrations_applied": applied,
        },
    )
    return await create_pool(
        dsn,
        application_name=pool.application_name,
        min_size=pool.min_size,
        max_size=pool.max_size,
        statement_timeout_ms=pool.statement_timeout_ms,
        server_settings=pool.server_settings,
        init=pool.init,
        transaction_pooling=pool.transaction_pooling,
    )
