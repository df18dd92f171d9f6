"""A pool for a database reached through PgBouncer in transaction mode (pg.transaction_pooling,
docs/kubernetes.md): every acquire is one transaction whose settings are set inside it.

PgBouncer in transaction mode lends a server connection to a client for one transaction only,
so session state does not follow a client: startup parameters other than the few PgBouncer
tracks itself (application_name, client_encoding, DateStyle, TimeZone) are refused, a SET
lands on whichever server connection ran it, and a prepared statement may be gone on the next
transaction (asyncpg's statement cache is off, pool.py). Here each `pool.acquire()` (and so
`pool.fetch`, `pool.execute`, ...) opens a transaction and sets the service's settings with
set_config(..., is_local => true) before the caller's first statement: they hold for exactly
the server connection the caller's statements run on, and end with its transaction. A
caller's own `conn.transaction()` inside becomes a savepoint; one that needs another
isolation level goes through isolated_transaction.

The price is three round trips per acquire (BEGIN, the settings, COMMIT), and the caller's
statements commit together at the end of the `async with` (rolled back when it raises)
instead of one by one.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import asyncpg
from asyncpg.pool import PoolAcquireContext
from asyncpg.transaction import Transaction

# What asyncpg.create_pool passes to Pool for the arguments ragmesh leaves at asyncpg's
# defaults (max_queries, the idle lifetime, the connection and record classes): read from
# its signature, so this pool is built exactly as create_pool would build it.
_CREATE_POOL_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(asyncpg.create_pool).parameters.items()
    if name
    in ("max_queries", "max_inactive_connection_lifetime", "connection_class", "record_class")
}

# Errors of a rollback on a connection the caller's exception may already have broken: the
# caller's exception is the one to raise, and the pool discards a broken connection itself.
_ROLLBACK_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings is on since PostgreSQL 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def settings_statement(settings: Mapping[str, str]) -> str:
    """One statement that sets `settings` for the current transaction only. Literals, not
    parameters: a statement without parameters goes in one round trip (the simple protocol)
    and prepares nothing."""
    calls = ", ".join(
        f"set_config({_literal(name)}, {_literal(value)}, true)" for name, value in settings.items()
    )
    return f"SELECT {calls}"


class _AcquiredInTransaction:
    """`pool.acquire()`'s context: the connection, inside a transaction with the settings."""

    def __init__(
        self,
        acquiring: PoolAcquireContext,
        settings_sql: str,
        isolation: str | None = None,
        readonly: bool = False,
    ) -> None:
        self._acquiring = acquiring
        self.settings_sql = settings_sql
        self.isolation = isolation
        self.readonly = readonly
        self._conn: asyncpg.Connection | None = None
        self._transaction: Transaction | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        conn = self._conn = await self._acquiring.__aenter__()
        try:
            await self.begin()
        except BaseException as exc:
            await self._acquiring.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        _LENT[id(conn)] = self
        return conn

    async def begin(self) -> None:
        assert self._conn is not None
        self._transaction = self._conn.transaction(isolation=self.isolation, readonly=self.readonly)
        await self._transaction.start()
        await self._conn.execute(self.settings_sql)

    async def end(self, *, commit: bool) -> None:
        transaction, self._transaction = self._transaction, None
        if transaction is not None and commit:
            await transaction.commit()
        elif transaction is not None:
            with contextlib.suppress(*_ROLLBACK_ERRORS):
                await transaction.rollback()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _LENT.pop(id(self._conn), None)
        try:
            await self.end(commit=exc_type is None)
        finally:
            await self._acquiring.__aexit__(exc_type, exc, traceback)


# The connections a TransactionPool has lent, by id(), with the context that lent them.
_LENT: dict[int, _AcquiredInTransaction] = {}


@contextlib.asynccontextmanager
async def isolated_transaction(
    conn: asyncpg.Connection, *, isolation: str, readonly: bool = False
) -> AsyncIterator[None]:
    """`conn.transaction(isolation=..., readonly=...)`, on a TransactionPool's connection as
    well. Acquired with that isolation (acquire_snapshot), the acquire's transaction is
    already one. Otherwise, since a transaction's isolation is fixed at its start, the
    acquire's transaction commits first (what ran in it is done, as each statement would be
    without a pooler), the new one gets the settings, and a fresh acquire transaction follows.
    That waits for a server connection again: a caller holding a lock that other holders of
    server connections wait for must acquire with the isolation instead, or they deadlock."""
    lent = _LENT.get(id(conn))
    if lent is None:
        async with conn.transaction(isolation=isolation, readonly=readonly):
            yield
        return
    if lent.isolation == isolation and (lent.readonly or not readonly):
        yield
        return
    await lent.end(commit=True)
    try:
        async with conn.transaction(isolation=isolation, readonly=readonly):
            await conn.execute(lent.settings_sql)
            yield
    except BaseException:
        with contextlib.suppress(*_ROLLBACK_ERRORS):
            await lent.begin()
        raise
    await lent.begin()


class TransactionPool(asyncpg.Pool):
    """asyncpg's pool, with every acquire wrapped in a transaction that sets `settings`."""

    __slots__ = ("_settings_sql",)

    def __init__(self, dsn: str, *, settings: Mapping[str, str], **pool_arguments: Any) -> None:
        super().__init__(dsn, **{**_CREATE_POOL_DEFAULTS, "loop": None, **pool_arguments})
        self._settings_sql = settings_statement(settings)

    def acquire(
        self, *, timeout: float | None = None, isolation: str | None = None, readonly: bool = False
    ) -> Any:
        return _AcquiredInTransaction(
            super().acquire(timeout=timeout), self._settings_sql, isolation, readonly
        )


def acquire_snapshot(pool: asyncpg.Pool) -> Any:
    """`pool.acquire()` for reads that need one snapshot (isolated_transaction with
    REPEATABLE READ, READ ONLY): on a TransactionPool the acquire's transaction is that one."""
    if isinstance(pool, TransactionPool):
        return pool.acquire(isolation="repeatable_read", readonly=True)
    return pool.acquire()
