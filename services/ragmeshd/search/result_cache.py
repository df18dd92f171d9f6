"""The search result cache: a Search answered before is answered again from memory until its
TTL passes, and at once no longer after any write to its collection, on every replica.

Entries are keyed by the collection, the collection's write generation, what the caller may
see (its key's collections and groups, runtime/tenancy.py: a result cached for one key is
served only to keys with the same boundary) and the request's bytes. The generation is a
counter in PostgreSQL (search_result_generations), raised after every write and read by every
replica on every query (one indexed row: a fraction of a millisecond next to embedding the
query and searching), so a replica never answers from
results cached before a write that was acknowledged. Raising it after the write commits
leaves no gap: a result computed before the write was cached under the old generation.

With the Qdrant backend there is no shared database to hold the counter, so the cache is off.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd import defaults
from ragmeshd.caching.lru import ByteLRU
from ragmeshd.postgres.pool import UNAVAILABLE_ERRORS, create_pool

_log = logging.getLogger("ragmesh.search.cache")

_READ = "SELECT generation FROM search_result_generations WHERE collection = $1"
_RAISE = """
INSERT INTO search_result_generations (collection, generation) VALUES ($1, 1)
ON CONFLICT (collection) DO UPDATE SET generation = search_result_generations.generation + 1
"""


class InvalidationError(Exception):
    """A write went through but its collection's cached results could not be invalidated."""


class ResultCache:
    def __init__(
        self, dsn: str | None, *, max_bytes: int, ttl_s: float, transaction_pooling: bool = False
    ) -> None:
        self._dsn = dsn
        self._transaction_pooling = transaction_pooling
        self._ttl_s = ttl_s
        self.memory: ByteLRU[bytes] = ByteLRU("search_results", max_bytes, len)
        self._pool: asyncpg.Pool | None = None

    @property
    def enabled(self) -> bool:
        return self._pool is not None

    async def start(self) -> None:
        """Connect (after the backend ran its migrations); without a DSN, TTL or bytes the
        cache stays off."""
        if self._dsn and self._ttl_s > 0 and self.memory.max_bytes > 0:
            self._pool = await create_pool(
                self._dsn,
                application_name="ragmesh-search-cache",
                min_size=1,
                max_size=defaults.SEARCH_RESULT_CACHE_POOL_MAX,
                statement_timeout_ms=defaults.SEARCH_RESULT_CACHE_STATEMENT_TIMEOUT_MS,
                transaction_pooling=self._transaction_pooling,
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def search(
        self,
        collection: str,
        request: pb.SearchRequest,
        compute: Callable[[], Awaitable[pb.SearchResponse]],
        *,
        boundary: str = "",
    ) -> pb.SearchResponse:
        """The cached response to `request` for callers with `boundary`
        (Principal.boundary()), or `compute()`'s, then cached."""
        if self._pool is None:
            return await compute()
        try:
            generation = await self._pool.fetchval(_READ, collection) or 0
        except (*UNAVAILABLE_ERRORS, TimeoutError, asyncpg.PostgresError):
            return await compute()  # the search itself reports what is wrong
        digest = hashlib.sha256(
            boundary.encode() + b"\0" + request.SerializeToString(deterministic=True)
        ).digest()
        key = f"{collection}\0{generation}\0".encode() + digest
        if (cached := self.memory.get(key)) is not None:
            return pb.SearchResponse.FromString(cached)
        response = await compute()
        self.memory.put(key, response.SerializeToString(), self._ttl_s)
        return response

    async def invalidate(self, collection: str) -> None:
        """After a write to `collection`: no replica answers from results cached before it."""
        if self._pool is None:
            return
        prefix = f"{collection}\0".encode()
        self.memory.discard_where(lambda key: key.startswith(prefix))
        try:
            await self._pool.execute(_RAISE, collection)
        except (*UNAVAILABLE_ERRORS, TimeoutError, asyncpg.PostgresError) as exc:
            raise InvalidationError(
                f"the write to {collection!r} was stored, but other replicas' cached results"
                " could not be invalidated (the database is not answering); retry the write"
            ) from exc
