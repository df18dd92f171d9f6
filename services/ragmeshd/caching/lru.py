"""An in-memory cache bounded in bytes: least recently used entries leave first, and an
entry may carry an expiry time. Not thread-safe: one event loop uses it."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ragmeshd.runtime import metrics

Value = TypeVar("Value")

# What one entry costs besides its key and value bytes (the dict slot, the tuple, the ints).
ENTRY_OVERHEAD_BYTES = 120


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ByteLRU(Generic[Value]):
    """Keys are bytes; `size_of(value)` says what a value costs. `max_bytes` 0 keeps nothing.

    `name` labels the cache's Prometheus metrics (ragmesh_cache_*{cache=name})."""

    def __init__(
        self,
        name: str,
        max_bytes: int,
        size_of: Callable[[Value], int],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._clock = clock
        # key -> (value, its cost in bytes, expiry time or None)
        self._entries: OrderedDict[bytes, tuple[Value, int, float | None]] = OrderedDict()
        self.bytes = 0
        self.stats = CacheStats()
        metrics.CACHE_BYTES.labels(name).set_function(lambda: self.bytes)
        metrics.CACHE_ENTRIES.labels(name).set_function(lambda: len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Value | None:
        entry = self._entries.get(key)
        if entry is not None and entry[2] is not None and entry[2] <= self._clock():
            self._remove(key)
            entry = None
        if entry is None:
            self.stats.misses += 1
            metrics.CACHE_MISSES.labels(self.name).inc()
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        metrics.CACHE_HITS.labels(self.name).inc()
        return entry[0]

    def put(self, key: bytes, value: Value, ttl_s: float | None = None) -> None:
        cost = len(key) + self._size_of(value) + ENTRY_OVERHEAD_BYTES
        if cost > self.max_bytes:
            return  # larger than the whole cache: not kept
        if key in self._entries:
            self._remove(key)
        expires = self._clock() + ttl_s if ttl_s is not None else None
        self._entries[key] = (value, cost, expires)
        self.bytes += cost
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.stats.evictions += 1
            metrics.CACHE_EVICTIONS.labels(self.name).inc()

    def discard_where(self, predicate: Callable[[bytes], bool]) -> int:
        """Remove every entry whose key matches; how many went."""
        doomed = [key for key in self._entries if predicate(key)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def _remove(self, key: bytes) -> None:
        _, cost, _ = self._entries.pop(key)
        self.bytes -= cost
