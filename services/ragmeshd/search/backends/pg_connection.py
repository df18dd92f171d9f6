"""The search store's side of PostgreSQL: its pool (vector codec, HNSW session settings) and
the translation of driver errors into the backend's StoreUnavailableError/StoreTimeoutError."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator

import asyncpg
import numpy as np

from ragmeshd.postgres.database import PoolSpec
from ragmeshd.postgres.pool import UNAVAILABLE_ERRORS, DatabaseConnectError
from ragmeshd.search.backends.base import StoreTimeoutError, StoreUnavailableError
from ragmeshd.settings import SearchSettings

APPLICATION_NAME = "ragmesh-search"


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


def search_pool_spec(settings: SearchSettings) -> PoolSpec:
    """The search store's pool: every connection gets the vector codec and the HNSW settings.
    Iterative scans (pgvector 0.8) keep scanning the HNSW graph until enough rows pass a
    filter; the dense query re-sorts the relaxed order itself."""
    return PoolSpec(
        application_name=APPLICATION_NAME,
        min_size=settings.pg.pool_min_size,
        max_size=settings.pg.pool_max_size,
        statement_timeout_ms=settings.pg.statement_timeout_ms,
        server_settings={
            "hnsw.ef_search": str(settings.hnsw_ef_search),
            "hnsw.iterative_scan": "relaxed_order",
        },
        init=register_vector_codec,
        transaction_pooling=settings.pg.transaction_pooling,
    )
