"""Closed-loop load for the `ragmesh bench` commands: N workers, each sending its next call
as soon as the previous one answers, until every call has been made."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

Item = TypeVar("Item")


@dataclass(frozen=True)
class LoadResult:
    calls: int
    elapsed_s: float
    latencies_s: list[float]

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.elapsed_s

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


async def closed_loop(
    items: Sequence[Item], call: Callable[[Item], Awaitable[object]], concurrency: int
) -> LoadResult:
    """Make `call(item)` for every item, `concurrency` at a time; time each call."""
    latencies: list[float] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(items):
            item = items[next_index]
            next_index += 1
            started = time.perf_counter()
            await call(item)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(len(items), time.perf_counter() - started, latencies)
