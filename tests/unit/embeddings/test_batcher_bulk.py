"""The batcher's bulk lane: writes' texts wait behind interactive calls and for room, instead
of being refused (issue 21)."""

from __future__ import annotations

import asyncio

import pytest

from ragmeshd.embeddings.batcher import QueueFullError
from tests.unit.embeddings.test_batcher import RecordingModel, make_batcher


async def until(condition, limit_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for `condition()` (the test fails if it never holds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


async def test_interactive_texts_go_before_queued_bulk_texts() -> None:
    model = RecordingModel()
    model.release.clear()  # the model holds the first batch while the others queue
    batcher = make_batcher(model, max_batch_texts=2, max_batch_delay_s=0.0)
    first = asyncio.ensure_future(batcher.submit(["held", "held2"], bulk=True))
    await until(lambda: model.concurrent == 1)
    bulk = asyncio.ensure_future(batcher.submit([f"b{i}" for i in range(6)], bulk=True))
    await until(lambda: batcher.queue_depth == 6)
    query = asyncio.ensure_future(batcher.submit(["q1", "q2"]))
    await until(lambda: batcher.queue_depth == 8)
    model.release.set()
    assert await query == ["Q1", "Q2"]
    assert await bulk == [f"B{i}" for i in range(6)]
    await first
    await batcher.close()
    # after the batch that was running, the interactive call's batch came first
    assert model.batches[1] == ["q1", "q2"]


async def test_a_full_bulk_lane_makes_writers_wait_not_fail() -> None:
    model = RecordingModel()
    model.release.clear()
    batcher = make_batcher(model, max_batch_texts=2, max_batch_delay_s=0.0, max_queue_texts=4)
    running = asyncio.ensure_future(batcher.submit(["r1", "r2"], bulk=True))
    await until(lambda: model.concurrent == 1)
    writers = [
        asyncio.ensure_future(batcher.submit([f"w{n}-{i}" for i in range(3)], bulk=True))
        for n in range(5)
    ]
    await until(lambda: batcher.queue_depth == 3)
    await asyncio.sleep(0.02)
    assert batcher.queue_depth == 3  # the others wait for room instead of failing
    assert not any(writer.done() for writer in writers)
    # the interactive lane keeps its own limit and its fast refusal
    with pytest.raises(QueueFullError):
        await batcher.submit([f"i{i}" for i in range(5)])
    # and bulk texts do not make interactive calls look slower
    assert batcher.expected_wait_s() == batcher.expected_wait_s(0)
    model.release.set()
    results = await asyncio.gather(*writers)
    assert results == [[f"W{n}-{i}" for i in range(3)] for n in range(5)]
    await running
    await batcher.close()


async def test_expected_wait_counts_interactive_texts_only() -> None:
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_texts=2, max_batch_delay_s=0.0)
    batcher.stats.texts_per_s = 10.0
    model.release.clear()
    held = asyncio.ensure_future(batcher.submit(["a", "b"], bulk=True))
    await until(lambda: model.concurrent == 1)
    bulk = asyncio.ensure_future(batcher.submit(["x"] * 50, bulk=True))
    await until(lambda: batcher.queue_depth == 50)
    assert batcher.expected_wait_s() == 0.0
    interactive = asyncio.ensure_future(batcher.submit(["y"] * 5))
    await until(lambda: batcher.queue_depth == 55)
    assert batcher.expected_wait_s() == pytest.approx(0.5)
    model.release.set()
    await asyncio.gather(held, bulk, interactive)
    await batcher.close()


async def test_a_cancelled_bulk_call_leaves_the_lane_and_frees_room() -> None:
    model = RecordingModel()
    model.release.clear()
    batcher = make_batcher(model, max_batch_texts=1, max_batch_delay_s=0.0, max_queue_texts=2)
    running = asyncio.ensure_future(batcher.submit(["run"], bulk=True))
    await until(lambda: model.concurrent == 1)
    doomed = asyncio.ensure_future(batcher.submit(["d1", "d2"], bulk=True))
    await until(lambda: batcher.queue_depth == 2)
    waiting = asyncio.ensure_future(batcher.submit(["k1"], bulk=True))
    await asyncio.sleep(0.02)
    assert batcher.queue_depth == 2
    doomed.cancel()
    await until(lambda: batcher.queue_depth == 1)
    model.release.set()
    assert await waiting == ["K1"]
    await running
    await batcher.close()
    assert ["d1"] not in model.batches and ["d2"] not in model.batches


async def test_bulk_batches_stay_short_and_never_mix_with_interactive_texts() -> None:
    model = RecordingModel()
    model.release.clear()
    batcher = make_batcher(model, max_batch_texts=8, max_batch_delay_s=0.0, bulk_batch_chars=10)
    held = asyncio.ensure_future(batcher.submit(["held"], bulk=True))
    await until(lambda: model.concurrent == 1)
    bulk = asyncio.ensure_future(
        batcher.submit(["aaaa", "bbbb", "cccc", "dddddddddddd"], bulk=True)
    )
    await until(lambda: batcher.queue_depth == 4)
    query = asyncio.ensure_future(batcher.submit(["q"]))
    await until(lambda: batcher.queue_depth == 5)
    model.release.set()
    await asyncio.gather(held, bulk, query)
    await batcher.close()
    # the interactive text alone, then bulk batches of at most 10 characters (a longer text
    # alone)
    assert model.batches == [["held"], ["q"], ["aaaa", "bbbb"], ["cccc"], ["dddddddddddd"]]
