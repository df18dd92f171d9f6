"""A shared cache tier in Redis (or Valkey), by URL: replicas share entries and they survive
restarts. The cache is an optimisation, so a slow or failed Redis never fails a call: a call
slower than `timeout_s` or an error counts as a miss, and the tier is skipped for `retry_s`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from ragmeshd.runtime import metrics

_log = logging.getLogger("ragmesh.cache")


class RedisTier:
    def __init__(
        self, name: str, url: str, *, ttl_s: int, timeout_s: float, retry_s: float
    ) -> None:
        import redis.asyncio

        self.name = name
        self._ttl_s = ttl_s
        self._retry_s = retry_s
        self._skip_until = 0.0
        self._client = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.hits = 0
        self.misses = 0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, exc: Exception) -> None:
        metrics.CACHE_ERRORS.labels(self.name).inc()
        if self.available:
            _log.warning(
                "shared cache tier failed; skipping it for a while",
                extra={"cache": self.name, "error": f"{type(exc).__name__}: {exc}"},
            )
        self._skip_until = time.monotonic() + self._retry_s

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The stored value of each key, None where absent (or when Redis is unreachable)."""
        if not keys:
            return []
        values: list[bytes | None] = [None] * len(keys)
        if self.available:
            try:
                values = [
                    value if isinstance(value, bytes) else None
                    for value in await self._client.mget(keys)
                ]
            except Exception as exc:  # any failure of an optimisation is a miss
                self._failed(exc)
        found = sum(value is not None for value in values)
        self.hits += found
        self.misses += len(keys) - found
        metrics.CACHE_HITS.labels(self.name).inc(found)
        metrics.CACHE_MISSES.labels(self.name).inc(len(keys) - found)
        return values

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        if not items or not self.available:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(key, value, ex=self._ttl_s)
                await pipe.execute()
        except Exception as exc:
            self._failed(exc)

    async def close(self) -> None:
        await self._client.aclose()
