"""The benches' closed-loop load: every item called once, never more than `concurrency` calls
in flight, each call timed."""

from __future__ import annotations

import asyncio

import pytest

from ragmeshd.bench.loadgen import LoadResult, closed_loop


async def test_every_item_is_called_once_with_at_most_concurrency_in_flight() -> None:
    in_flight, most, seen = 0, 0, []

    async def call(item: int) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001 * (item % 3))
        seen.append(item)
        in_flight -= 1

    result = await closed_loop(list(range(40)), call, concurrency=4)
    assert sorted(seen) == list(range(40))
    assert most == 4
    assert result.calls == 40
    assert len(result.latencies_s) == 40
    assert all(latency >= 0 for latency in result.latencies_s)
    assert result.elapsed_s >= max(result.latencies_s)


async def test_more_workers_than_items_make_each_call_once() -> None:
    seen: list[str] = []

    async def call(item: str) -> None:
        await asyncio.sleep(0)
        seen.append(item)

    result = await closed_loop(["a", "b"], call, concurrency=8)
    assert sorted(seen) == ["a", "b"]
    assert result.calls == 2


async def test_a_failing_call_fails_the_run() -> None:
    async def call(item: int) -> None:
        if item == 3:
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        await closed_loop(list(range(5)), call, concurrency=2)


def test_rate_and_percentiles() -> None:
    result = LoadResult(calls=10, elapsed_s=2.0, latencies_s=[i / 100 for i in range(10, 0, -1)])
    assert result.calls_per_s == 5.0
    # Sorted: 0.01 ... 0.10 s; the p-th value is the one at index int(p * n), capped.
    assert result.percentile_ms(0.5) == pytest.approx(60.0)
    assert result.percentile_ms(0.0) == pytest.approx(10.0)
    assert result.percentile_ms(0.99) == pytest.approx(100.0)
    assert result.percentile_ms(1.0) == pytest.approx(100.0)
