"""Cutting one model batch into slices that waste little work on padding.

Every text in a slice is padded to the slice's longest, and every slice pays a fixed cost
(one forward pass). With the batch sorted longest first, the best cut is found exactly by
dynamic programming over slice boundaries, minimising

    sum over slices of (overhead_tokens + texts_in_slice * longest_in_slice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

Item = TypeVar("Item")


def plan_slices(lengths: Sequence[int], overhead_tokens: float) -> list[list[int]]:
    """Indices into `lengths`, grouped into slices (longest texts first)."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index], reverse=True)
    count = len(order)
    # best[end]: the least cost of slicing order[:end]; cut[end]: where its last slice starts.
    best = [0.0] + [float("inf")] * count
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        for start in range(end):
            # Sorted longest first, so order[start] is the slice's longest text.
            cost = best[start] + overhead_tokens + (end - start) * lengths[order[start]]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    slices: list[list[int]] = []
    end = count
    while end > 0:
        slices.append(order[cut[end] : end])
        end = cut[end]
    slices.reverse()
    return slices


def spread_slices(slices: Sequence[Sequence[Item]], streams: int) -> list[list[Item]]:
    """The slices, the one with most texts cut in consecutive halves until there is one per
    stream (a runtime that runs slices at once keeps every stream busy) or every slice is a
    single text. Order is kept: concatenated, the parts are the slices concatenated."""
    parts = [list(texts) for texts in slices if texts]
    while parts and len(parts) < streams:
        largest = max(range(len(parts)), key=lambda i: len(parts[i]))
        if len(parts[largest]) < 2:
            break
        texts = parts[largest]
        half = len(texts) // 2
        parts[largest : largest + 1] = [texts[:half], texts[half:]]
    return parts
