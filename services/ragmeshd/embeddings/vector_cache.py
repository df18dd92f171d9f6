"""The embeddings cache: vectors of texts embedded before, per replica in memory (LRU bounded
in bytes) and optionally shared by every replica in Redis.

An entry is keyed by the model's identity (its name, a digest of its files and the runtime,
since runtimes differ in the last digits) and the SHA-256 of the text. What is cached is the
model's output before the request's options apply: `normalize` is applied to it afterwards
and `truncate = false` only refuses long texts before they get here, so one entry serves
every combination of the two and they are not part of the key.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from ragmeshd.caching.lru import ByteLRU
from ragmeshd.caching.redis_tier import RedisTier
from ragmeshd.embeddings.model import EncodedText

# Keys of the shared tier start with this, so a Redis can hold other things too.
REDIS_PREFIX = b"ragmesh:embeddings:"
# token_count, truncated: in front of the float32 values in a shared-tier entry.
_HEADER = struct.Struct("<I?")

Compute = Callable[[list[str]], Awaitable[Sequence[EncodedText]]]


def text_key(identity: str, text: str) -> bytes:
    return hashlib.sha256(
        identity.encode() + b"\0" + text.encode("utf-8", "surrogatepass")
    ).digest()


def _pack(result: EncodedText) -> bytes:
    vector = np.asarray(result.vector, dtype=np.float32)
    return _HEADER.pack(result.token_count, result.truncated) + vector.tobytes()


def _unpack(data: bytes) -> EncodedText:
    token_count, truncated = _HEADER.unpack_from(data)
    vector = np.frombuffer(data, dtype=np.float32, offset=_HEADER.size).copy()
    return EncodedText(vector, token_count, truncated)


class VectorCache:
    def __init__(self, max_bytes: int, shared: RedisTier | None = None) -> None:
        self.memory: ByteLRU[EncodedText] = ByteLRU(
            "embeddings", max_bytes, lambda result: result.vector.nbytes + _HEADER.size
        )
        self.shared = shared

    @property
    def enabled(self) -> bool:
        return self.memory.max_bytes > 0 or self.shared is not None

    async def embed(self, identity: str, texts: list[str], compute: Compute) -> list[EncodedText]:
        """Each text's result: from memory, else the shared tier, else `compute` (called once
        with the distinct texts found in neither)."""
        if not self.enabled:
            return list(await compute(texts))
        keys = [text_key(identity, text) for text in texts]
        results: list[EncodedText | None] = [self.memory.get(key) for key in keys]
        if self.shared is not None:
            await self._from_shared(keys, results)
        missing: dict[bytes, str] = {}
        for key, text, result in zip(keys, texts, results, strict=True):
            if result is None:
                missing.setdefault(key, text)
        if missing:
            computed = dict(zip(missing, await compute(list(missing.values())), strict=True))
            for key, result in computed.items():
                self.memory.put(key, result)
            if self.shared is not None:
                await self.shared.set_many(
                    [(REDIS_PREFIX + key, _pack(result)) for key, result in computed.items()]
                )
            for index, key in enumerate(keys):
                if results[index] is None:
                    results[index] = computed[key]
        return [result for result in results if result is not None]  # none is left

    async def _from_shared(self, keys: list[bytes], results: list[EncodedText | None]) -> None:
        assert self.shared is not None
        wanted = [index for index, result in enumerate(results) if result is None]
        values = await self.shared.get_many([REDIS_PREFIX + keys[index] for index in wanted])
        for index, value in zip(wanted, values, strict=True):
            if value is not None:
                results[index] = _unpack(value)
                self.memory.put(keys[index], results[index])  # type: ignore[arg-type]

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()
