"""Connecting to PostgreSQL: retries at start-up, the asyncpg pool, the vector codec, and
which driver errors mean "the database is unavailable"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np

from services.config import SearchSettings
from services.search.backends.base import StoreTimeoutError, StoreUnavailableError

_log = logging.getLogger("ragmesh.search.postgres")

CONNECT_TIMEOUT_S = 10.0
APPLICATION_NAME = "ragmesh-search"

# Driver errors that mean the database is down, restarting or unreachable.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)

_CONNECT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *UNAVAILABLE_ERRORS)


class DatabaseConnectError(Exception):
    """The database could not be reached at start-up after every attempt."""


def redact(dsn: str) -> str:
    """The DSN without its password, for logs and messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn driver errors into the backend's StoreUnavailableError / StoreTimeoutError."""
    try:
        yield
    except asyncpg.QueryCanceledError as exc:
        raise StoreTimeoutError(f"the database cancelled {what}: {exc}") from exc
    except TimeoutError as exc:
        raise StoreTimeoutError(f"the database did not answer {what} in time") from exc
    except UNAVAILABLE_ERRORS as exc:
        raise StoreUnavailableError(
            f"the database is unreachable ({type(exc).__name__}: {exc}); retry shortly"
        ) from exc


async def connect_with_retries(
    dsn: str,
    *,
    attempts: int,
    backoff_base_s: float,
    connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
) -> asyncpg.Connection:
    """One connection, retried with exponential backoff (base * 2^(attempt-1)); every failed
    attempt is logged, and the last failure raises DatabaseConnectError."""

    async def default_connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)

    opener = connect or default_connect
    for attempt in range(1, attempts + 1):
        try:
            return await opener()
        except _CONNECT_ERRORS as exc:
            if attempt == attempts:
                raise DatabaseConnectError(
                    f"could not connect to PostgreSQL at {redact(dsn)} after {attempts}"
                    f" attempts: {type(exc).__name__}: {exc}. Is the server running? (the"
                    " embedded one runs with `ragmesh serve postgres`; an external one is set"
                    " with RAGMESH_SEARCH__PG_DSN)"
                ) from exc
            delay = backoff_base_s * 2 ** (attempt - 1)
            _log.warning(
                "database not reachable, retrying",
                extra={
                    "attempt": attempt,
                    "attempts": attempts,
                    "retry_in_s": delay,
                    "error": f"{type(exc).__name__}: {exc}",
                    "dsn": redact(dsn),
                },
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def encode_vector(vector: np.ndarray | list[float]) -> bytes:
    """pgvector's binary format: dimensions (int16), unused (int16), big-endian float32s."""
    values = np.asarray(vector, dtype=">f4")
    return struct.pack(">HH", values.shape[0], 0) + values.tobytes()


def decode_vector(data: bytes) -> np.ndarray:
    (dimensions, _unused) = struct.unpack_from(">HH", data)
    return np.frombuffer(data, dtype=">f4", count=dimensions, offset=4).astype(np.float32)


async def register_vector_codec(conn: asyncpg.Connection) -> None:
    schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE t.typname = 'vector'"
    )
    if schema is None:
        raise DatabaseConnectError("the pgvector extension is not installed in this database")
    await conn.set_type_codec(
        "vector", schema=schema, encoder=encode_vector, decoder=decode_vector, format="binary"
    )


async def create_pool(dsn: str, settings: SearchSettings) -> asyncpg.Pool:
    """The connection pool; every connection gets the vector codec and the HNSW settings."""

    async def init(conn: asyncpg.Connection) -> None:
        await register_vector_codec(conn)

    pool = await asyncpg.create_pool(
        dsn,
        min_size=settings.pg_pool_min_size,
        max_size=settings.pg_pool_max_size,
        init=init,
        timeout=CONNECT_TIMEOUT_S,
        # Session defaults sent at connect: unlike SET, they survive the RESET ALL the pool
        # runs when a connection is released. Iterative scans (pgvector 0.8) keep scanning
        # the HNSW graph until enough rows pass a filter; the dense query re-sorts the
        # relaxed order itself.
        server_settings={
            "application_name": APPLICATION_NAME,
            "statement_timeout": str(settings.pg_statement_timeout_ms),
            "hnsw.ef_search": str(settings.hnsw_ef_search),
            "hnsw.iterative_scan": "relaxed_order",
        },
    )
    return pool
