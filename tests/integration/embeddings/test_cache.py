"""The embeddings cache: in memory per replica, shared through a real redis-server, and
seen through the real server's Embed and Info."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from ragmeshd.caching.redis_tier import RedisTier
from ragmeshd.embeddings.model import EncodedText
from ragmeshd.embeddings.vector_cache import VectorCache
from tests.helpers import ServerProcess
from tests.redis_server import running_redis

pytestmark = pytest.mark.integration


class CountingModel:
    """Stands in for the model process where only the cache is under test: a deterministic
    vector per text, and a record of what it was asked to embed."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> list[EncodedText]:
        self.calls.append(list(texts))
        return [self.expected(text) for text in texts]

    @staticmethod
    def expected(text: str) -> EncodedText:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        vector = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
        return EncodedText(vector, len(text.split()) + 2, len(text) > 1000)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as (url, _):
        yield url


def shared(url: str) -> RedisTier:
    return RedisTier("embeddings_redis", url, ttl_s=60, timeout_s=0.5, retry_s=5)


async def test_memory_tier_embeds_each_distinct_text_once() -> None:
    model = CountingModel()
    cache = VectorCache(1 << 20)
    first = await cache.embed("m/torch", ["a b", "c d", "a b"], model)
    second = await cache.embed("m/torch", ["c d", "e f"], model)
    assert model.calls == [["a b", "c d"], ["e f"]]
    assert np.array_equal(first[0].vector, first[2].vector)
    assert np.array_equal(first[1].vector, second[0].vector)
    assert second[1].token_count == CountingModel.expected("e f").token_count
    # Another model identity (or runtime) never sees these entries.
    await cache.embed("m/openvino", ["a b"], model)
    assert model.calls[-1] == ["a b"]


async def test_shared_tier_answers_another_replica(redis_url: str) -> None:
    model = CountingModel()
    texts = [f"shared text {i}" for i in range(5)]
    replica_a, replica_b = (
        VectorCache(1 << 20, shared(redis_url)),
        VectorCache(1 << 20, shared(redis_url)),
    )
    from_a = await replica_a.embed("m/x", texts, model)
    from_b = await replica_b.embed("m/x", texts, model)
    assert model.calls == [texts]  # replica b computed nothing
    for a, b in zip(from_a, from_b, strict=True):
        assert np.array_equal(a.vector, b.vector)
        assert (a.token_count, a.truncated) == (b.token_count, b.truncated)
    assert replica_b.shared is not None and replica_b.shared.hits == 5
    await replica_a.close()
    await replica_b.close()


async def test_a_dead_redis_costs_nothing_but_misses(tmp_path: Path) -> None:
    model = CountingModel()
    with running_redis(tmp_path) as (url, process):
        cache = VectorCache(0, shared(url))  # the shared tier alone
        await cache.embed("m/x", ["before"], model)
        process.stop()  # kill the real server
        results = await cache.embed("m/x", ["before", "after"], model)
    assert [result.token_count for result in results] == [3, 3]
    assert model.calls == [["before"], ["before", "after"]]
    assert cache.shared is not None and not cache.shared.available
    await cache.close()


async def test_server_answers_repeats_from_its_cache(embeddings_server: ServerProcess) -> None:
    texts = [f"cache me please, text number {i}" for i in range(4)]
    async with grpc.aio.insecure_channel(embeddings_server.target) as channel:
        client = pb_grpc.EmbeddingsServiceStub(channel)
        before = await client.Info(pb.InfoRequest())
        first = await client.Embed(pb.EmbedRequest(inputs=texts))
        second = await client.Embed(pb.EmbedRequest(inputs=texts))
        raw = await client.Embed(pb.EmbedRequest(inputs=texts[:1], normalize=False))
        after = await client.Info(pb.InfoRequest())
    for a, b in zip(first.embeddings, second.embeddings, strict=True):
        assert list(a.values) == list(b.values)
        assert (a.token_count, a.truncated) == (b.token_count, b.truncated)
    assert len(raw.embeddings[0].values) == 384
    assert after.cache.hits - before.cache.hits == len(texts) + 1
    assert after.cache.misses - before.cache.misses == len(texts)
    assert after.texts_embedded - before.texts_embedded == len(texts)  # the model ran once
    assert after.cache.entries >= len(texts) and after.cache.bytes > 0
    assert after.cache.max_bytes > 0 and not after.cache.shared_tier
    assert after.runtime
