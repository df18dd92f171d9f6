"""Token buckets, one per API key: `per_second` tokens flow in, at most `burst` are kept, and
a call takes one. A refused call takes nothing and learns how long until a token is there."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ragmeshd.runtime.keystore import RateLimit


@dataclass
class _Bucket:
    limit: RateLimit
    tokens: float
    updated: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # Seconds until the next call would be allowed (0 when allowed).
    retry_after_s: float
    remaining: int


class KeyBuckets:
    """The buckets of every limited key; a key whose limit changes starts a fresh bucket."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key_id: str, limit: RateLimit, hits: int = 1) -> Decision:
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.limit != limit:
            bucket = self._buckets[key_id] = _Bucket(limit, float(limit.burst), now)
        bucket.tokens = min(
            float(limit.burst), bucket.tokens + (now - bucket.updated) * limit.per_second
        )
        bucket.updated = now
        if bucket.tokens >= hits:
            bucket.tokens -= hits
            return Decision(True, 0.0, int(bucket.tokens))
        return Decision(False, (hits - bucket.tokens) / limit.per_second, 0)
