"""Cutting a batch into slices: exact optimum of padded tokens plus a per-slice cost."""

from __future__ import annotations

import itertools

from ragmeshd.embeddings.slicing import plan_slices, spread_slices


def cost(lengths: list[int], slices: list[list[int]], overhead: float) -> float:
    return sum(overhead + len(s) * max(lengths[i] for i in s) for s in slices)


def brute_force_best(lengths: list[int], overhead: float) -> float:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        slices, current = [], [order[0]]
        for index, cut_here in zip(order[1:], cuts, strict=True):
            if cut_here:
                slices.append(current)
                current = []
            current.append(index)
        slices.append(current)
        best = min(best, cost(lengths, slices, overhead))
    return best


def test_every_text_lands_in_exactly_one_slice() -> None:
    lengths = [5, 40, 12, 12, 90, 7, 33]
    slices = plan_slices(lengths, overhead_tokens=20)
    assert sorted(i for s in slices for i in s) == list(range(len(lengths)))


def test_slices_are_optimal_against_brute_force() -> None:
    for lengths in ([10, 10, 10, 10], [100, 5, 5, 5, 5, 5], [64, 60, 20, 18, 3, 2, 2, 40]):
        for overhead in (0.0, 8.0, 32.0, 1000.0):
            slices = plan_slices(lengths, overhead)
            assert cost(lengths, slices, overhead) == brute_force_best(lengths, overhead)


def test_a_large_overhead_keeps_one_slice_and_none_splits_by_length() -> None:
    lengths = [30, 10, 20]
    assert plan_slices(lengths, overhead_tokens=10_000) == [[0, 2, 1]]
    assert plan_slices([9, 9, 3], overhead_tokens=0) == [[0, 1], [2]]


def test_an_empty_batch_has_no_slices() -> None:
    assert plan_slices([], overhead_tokens=32) == []


def test_spread_slices_gives_every_stream_a_part_in_order() -> None:
    slices = [["a", "b", "c", "d", "e"], ["f"], ["g", "h"]]
    for streams in range(1, 12):
        parts = spread_slices(slices, streams)
        # Nothing lost, nothing reordered, no empty part.
        assert [text for part in parts for text in part] == list("abcdefgh")
        assert all(parts)
        # One part per stream until every part is a single text; never more than needed.
        assert len(parts) == max(len(slices), min(streams, 8))
    assert spread_slices([], 4) == []
    assert spread_slices([["x"]], 4) == [["x"]]
