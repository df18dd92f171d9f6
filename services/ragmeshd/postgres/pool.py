"""Connecting to PostgreSQL: retries at start-up, the asyncpg pool, and which driver errors
mean "the database is unavailable". Shared by every service that keeps tables there."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from ragmeshd.postgres.transaction_pool import TransactionPool
from ragmeshd.runtime.redaction import redact
from ragmeshd.runtime.startup import retry_at_startup

_log = logging.getLogger("ragmesh.postgres")

CONNECT_TIMEOUT_S = 10.0

# Driver errors that mean the database is down, restarting or unreachable, or in a passing
# state in which the same statement may succeed when sent again: a transaction chosen as a
# deadlock or serialization victim, a lock not available, a cached plan invalidated by a
# schema change (a replica migrating at start-up; asyncpg drops the plan), the server short
# of disk, memory or connections; or a pooled connection the driver finds still busy with an
# operation a cancelled call left behind ("cannot switch to state ...; another operation is
# in progress", seen in the chaos suite: the pool terminates it on release). None of these is
# the caller's fault, so callers answer UNAVAILABLE ("retry shortly"), never INTERNAL.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.TransactionRollbackError,
    asyncpg.LockNotAvailableError,
    asyncpg.InvalidCachedStatementError,
    asyncpg.InsufficientResourcesError,
    asyncpg.InternalClientError,
)

_CONNECT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *UNAVAILABLE_ERRORS)


# Every connection the pools of this process opened (each service process has its own). A
# frozen server (SIGSTOP, a hung host) never answers and never closes the socket, so a query
# already sent on one of these would wait for the caller's deadline; when a dependency monitor
# finds the database gone it drops them all (drop_open_connections), which fails those queries
# at once with ConnectionDoesNotExistError, one of UNAVAILABLE_ERRORS. A client-side command
# timeout cannot do this job: it would have to be longer than the statement timeout (30 s for
# search; a large upsert under load legitimately takes that long), far past callers' deadlines.
_OPEN_CONNECTIONS: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()


def drop_open_connections() -> int:
    """Close every pool connection of this process at once (no goodbye to the server); calls
    waiting on them fail with an unavailable error, and each pool opens new connections on the
    next acquire. Returns how many were open."""
    dropped = 0
    for conn in list(_OPEN_CONNECTIONS):
        if not conn.is_closed():
            conn.terminate()
            dropped += 1
    return dropped


class DatabaseConnectError(Exception):
    """The database could not be reached at start-up after every attempt."""


async def connect_with_retries(
    dsn: str,
    *,
    attempts: int,
    backoff_base_s: float,
    connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
) -> asyncpg.Connection:
    """One connection, retried at start-up (runtime/startup.py: base * 2^(attempt-1) after
    each failure, logged); the last failure raises DatabaseConnectError."""

    async def default_connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)

    try:
        return await retry_at_startup(
            connect or default_connect,
            attempts=attempts,
            backoff_base_s=backoff_base_s,
            retry_on=_CONNECT_ERRORS,
            log=_log,
            message="database not reachable, retrying",
            log_extra={"dsn": redact(dsn)},
        )
    except _CONNECT_ERRORS as exc:
        raise DatabaseConnectError(
            f"could not connect to PostgreSQL at {redact(dsn)} after {attempts}"
            f" attempts: {type(exc).__name__}: {exc}. Is the server running? (the"
            " embedded one runs with `ragmesh serve postgres`; an external one is set"
            " with RAGMESH_SEARCH__PG_DSN)"
        ) from exc


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a released connection needs besides the rollback asyncpg always does: nothing.

    asyncpg's default reset sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release, one more round trip per pooled use (py-spy on search under
    load: a sixth of the server's database writes). ragmesh's pools never leave session
    state behind: settings are sent at connect (or set per transaction behind PgBouncer),
    cursors live inside transactions, and no pooled connection takes advisory locks
    (migrations use their own connection) or LISTENs."""


async def create_pool(
    dsn: str,
    *,
    application_name: str,
    min_size: int,
    max_size: int,
    statement_timeout_ms: int,
    server_settings: Mapping[str, str] | None = None,
    init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    transaction_pooling: bool = False,
) -> asyncpg.Pool:
    """The connection pool (one attempt; callers retry start-up with connect_with_retries).

    Settings are session defaults sent at connect. Behind PgBouncer in transaction mode
    (`transaction_pooling`) there is no session to hold them: they are set inside every
    acquire's transaction instead (transaction_pool.py), and asyncpg's statement cache is off,
    since a statement prepared on one server connection is not there on the next transaction
    (PgBouncer before 1.21, or without max_prepared_statements).
    """

    async def on_connect(conn: asyncpg.Connection) -> None:
        _OPEN_CONNECTIONS.add(conn)
        if init is not None:
            await init(conn)

    settings = {"statement_timeout": str(statement_timeout_ms), **(server_settings or {})}
    arguments: dict[str, Any] = {
        "min_size": min_size,
        "max_size": max_size,
        "init": on_connect,
        "reset": _keep_session,
        "timeout": CONNECT_TIMEOUT_S,
    }
    if transaction_pooling:
        # application_name is one of the startup parameters PgBouncer passes on.
        pool = TransactionPool(
            dsn,
            settings=settings,
            server_settings={"application_name": application_name},
            statement_cache_size=0,
            **arguments,
        )
        return await pool
    return await asyncpg.create_pool(
        dsn, server_settings={"application_name": application_name, **settings}, **arguments
    )
