"""Limits that count work (runtime/work_meter.py) against the real rate-limit service on a
unix socket: units come out of the key's one bucket, a call over what is left is refused with
a retry hint, keys without a limit are never charged, and a service that cannot answer fails
closed unless told to fail open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from ragmeshd.ratelimit.buckets import KeyBuckets
from ragmeshd.ratelimit.server import KeyRateLimiter
from ragmeshd.runtime.auth import KeyVerifier
from ragmeshd.runtime.errors import RpcFailure
from ragmeshd.runtime.keystore import KeyStore, RateLimit
from ragmeshd.runtime.work_meter import WorkMeter


class FrozenClock:
    def __call__(self) -> float:
        return 0.0


@pytest.fixture
async def service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, KeyStore]]:
    monkeypatch.setattr("ragmeshd.runtime.auth.RELOAD_INTERVAL_S", 0.0)
    store = KeyStore(tmp_path / "keys")
    limiter = KeyRateLimiter(KeyVerifier(store), KeyBuckets(FrozenClock()))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([limiter.handler()])
    target = f"unix:{tmp_path / 'ratelimit.sock'}"
    server.add_insecure_port(target)
    await server.start()
    yield target, store
    await server.stop(None)


async def test_units_come_out_of_the_keys_bucket(service: tuple[str, KeyStore]) -> None:
    target, store = service
    key = store.create("worker", rate=RateLimit(per_second=1, burst=10))
    async with grpc.aio.insecure_channel(target) as channel:
        meter = WorkMeter(channel)
        assert (await meter.charge(key, 7)).allowed
        refused = await meter.charge(key, 4)  # 3 left
        assert not refused.allowed and refused.retry_after_s >= 1
        assert (await meter.charge(key, 3)).allowed
        with pytest.raises(RpcFailure, match=r"rate limit is spent \(1 text") as spent:
            await meter.require(key, 1, "1 text")
        assert spent.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_keys_without_a_limit_are_never_charged(service: tuple[str, KeyStore]) -> None:
    target, store = service
    free = store.create("free")
    async with grpc.aio.insecure_channel(target) as channel:
        meter = WorkMeter(channel)
        assert all([(await meter.charge(free, 10_000)).allowed for _ in range(3)])
        assert (await meter.charge(None, 5)).allowed


async def test_no_service_fails_closed_unless_told_to_fail_open(tmp_path: Path) -> None:
    key = KeyStore(tmp_path / "keys").create("limited", rate=RateLimit(per_second=1, burst=5))
    target = f"unix:{tmp_path / 'nobody.sock'}"
    async with grpc.aio.insecure_channel(target) as channel:
        assert not (await WorkMeter(channel).charge(key, 2)).allowed
        assert (await WorkMeter(channel, fail_open=True).charge(key, 2)).allowed
