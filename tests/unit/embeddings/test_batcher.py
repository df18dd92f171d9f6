"""The dynamic batcher, driven by a recording batch function instead of a model.

No timing luck: a test that needs the model to hold a batch holds it (`release`) and waits
for the condition it needs (`until`), never for a guessed number of milliseconds, and no test
asserts that something was fast; the only time bounds are lower ones a sleep guarantees."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from ragmeshd.embeddings.batcher import BatchTimeoutError, DynamicBatcher, QueueFullError
from tests.helpers import eventually_async


class RecordingModel:
    """Returns each text's upper-case form and remembers every batch it was given."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> list[str]:
        with self._lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        self.release.wait()
        time.sleep(self.delay_s)
        self.batches.append(list(texts))
        with self._lock:
            self.concurrent -= 1
        return [text.upper() for text in texts]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition`, giving the loop and the model's thread their turns; a hang
    guard of a minute, not a speed bound."""
    await eventually_async(condition, 60, what, interval_s=0.001)


def make_batcher(model: RecordingModel, **overrides: float) -> DynamicBatcher[str]:
    settings = {"max_batch_texts": 4, "max_batch_delay_s": 0.05, "max_queue_texts": 100}
    settings.update(overrides)
    batcher: DynamicBatcher[str] = DynamicBatcher(model, **settings)  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def test_concurrent_calls_are_merged_up_to_max_batch_texts() -> None:
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_texts=4, max_batch_delay_s=0.2)
    results = await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(10)))
    await batcher.close()
    assert results == [[f"T{i}"] for i in range(10)]
    assert [len(batch) for batch in model.batches] == [4, 4, 2]
    assert max(len(batch) for batch in model.batches) <= 4


async def test_a_lone_call_waits_at_most_the_max_delay() -> None:
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_texts=64, max_batch_delay_s=0.05)
    started = time.perf_counter()
    assert await batcher.submit(["alone"]) == ["ALONE"]
    waited = time.perf_counter() - started
    await batcher.close()
    # It waited for company (a lower bound the delay guarantees), then ran alone.
    assert waited >= 0.04
    assert model.batches == [["alone"]]


async def test_batch_is_sorted_longest_first_and_results_keep_call_order() -> None:
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_texts=8, max_batch_delay_s=0.2)
    texts = ["bb", "a", "dddd", "ccc"]
    assert await batcher.submit(texts) == ["BB", "A", "DDDD", "CCC"]
    await batcher.close()
    assert model.batches == [["dddd", "ccc", "bb", "a"]]


async def test_results_of_interleaved_calls_go_back_to_their_callers() -> None:
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_texts=3, max_batch_delay_s=0.05)
    calls = [[f"c{c}-{i}" * (i + 1) for i in range(c % 4 + 1)] for c in range(12)]
    results = await asyncio.gather(*(batcher.submit(texts) for texts in calls))
    await batcher.close()
    assert results == [[text.upper() for text in texts] for texts in calls]


async def test_full_queue_refuses_at_once() -> None:
    model = RecordingModel()
    model.release.clear()  # the model holds its first batch, so the queue fills up
    batcher = make_batcher(model, max_batch_texts=2, max_batch_delay_s=0.0, max_queue_texts=3)
    first = asyncio.ensure_future(batcher.submit(["a", "b"]))
    await until(lambda: model.concurrent == 1, "the first batch is inside the model")
    waiting = asyncio.ensure_future(batcher.submit(["c", "d", "e"]))
    await until(lambda: batcher.queue_depth == 3, "three texts wait")
    # Refused at once: decided within one turn of the loop while the model still holds its
    # batch (nothing it could have waited for has happened).
    refused = asyncio.ensure_future(batcher.submit(["f"]))
    await asyncio.sleep(0)
    assert refused.done() and model.concurrent == 1
    with pytest.raises(QueueFullError, match="queue is full"):
        refused.result()
    model.release.set()
    assert await first == ["A", "B"]
    assert await waiting == ["C", "D", "E"]
    await batcher.close()


async def test_cancelled_call_is_dropped_from_the_queue() -> None:
    model = RecordingModel()
    model.release.clear()
    batcher = make_batcher(model, max_batch_texts=1, max_batch_delay_s=0.0)
    running = asyncio.ensure_future(batcher.submit(["running"]))
    await until(lambda: model.concurrent == 1, "the first batch is inside the model")
    doomed = asyncio.ensure_future(batcher.submit(["doomed", "doomed2"]))
    kept = asyncio.ensure_future(batcher.submit(["kept"]))
    await asyncio.sleep(0)
    assert batcher.queue_depth == 3
    doomed.cancel()
    await asyncio.sleep(0)
    assert batcher.queue_depth == 1
    model.release.set()
    assert await running == ["RUNNING"]
    assert await kept == ["KEPT"]
    await batcher.close()
    assert ["doomed"] not in model.batches and ["doomed2"] not in model.batches


async def test_expired_call_is_dropped_and_others_still_served() -> None:
    model = RecordingModel()
    model.release.clear()  # the model holds "first" until the other call has expired
    batcher = make_batcher(model, max_batch_texts=1, max_batch_delay_s=0.0)
    slow = asyncio.ensure_future(batcher.submit(["first"]))
    await until(lambda: model.concurrent == 1, "the first batch is inside the model")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.submit(["expires"]), timeout=0.02)
    model.release.set()
    assert await slow == ["FIRST"]
    await batcher.close()
    assert ["expires"] not in model.batches


async def test_model_runs_one_batch_at_a_time_off_the_event_loop() -> None:
    model = RecordingModel()
    model.release.clear()
    batcher = make_batcher(model, max_batch_texts=2, max_batch_delay_s=0.0)
    calls = asyncio.gather(*(batcher.submit([str(i)]) for i in range(8)))
    await until(lambda: model.concurrent == 1, "a batch is inside the model")
    # The loop keeps running while the model holds a batch: these turns happen meanwhile.
    for _ in range(10):
        await asyncio.sleep(0)
    assert model.concurrent == 1 and not calls.done()
    model.release.set()
    await calls
    await batcher.close()
    assert model.max_concurrent == 1


async def test_close_finishes_queued_work() -> None:
    model = RecordingModel(delay_s=0.02)
    batcher = make_batcher(model, max_batch_texts=2, max_batch_delay_s=0.0)
    pending = [asyncio.ensure_future(batcher.submit([f"q{i}"])) for i in range(6)]
    await asyncio.sleep(0)
    await batcher.close()
    assert [task.result() for task in pending] == [[f"Q{i}"] for i in range(6)]


async def test_model_failure_fails_only_that_batch() -> None:
    calls = 0

    def flaky(texts: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return texts

    batcher: DynamicBatcher[str] = DynamicBatcher(
        flaky, max_batch_texts=1, max_batch_delay_s=0.0, max_queue_texts=10
    )
    batcher.start()
    with pytest.raises(RuntimeError, match="boom"):
        await batcher.submit(["x"])
    assert await batcher.submit(["y"]) == ["y"]
    await batcher.close()
    assert batcher.stats.batches == 1 and batcher.stats.texts == 1


async def test_expected_wait_follows_the_measured_throughput() -> None:
    """Load shedding's estimate: queued texts / texts per second of the (at least half full)
    batches run so far."""
    model = RecordingModel(delay_s=0.05)
    batcher = make_batcher(model, max_batch_texts=4, max_batch_delay_s=0.0)
    assert batcher.expected_wait_s(100) == 0  # nothing measured yet: no estimate
    await batcher.submit(["a"])  # a small batch says little about throughput
    assert batcher.stats.texts_per_s == 0
    await batcher.submit(["a", "b", "c", "d"])  # 4 texts in >= 50 ms: <= 80 texts/s
    rate = batcher.stats.texts_per_s
    assert 0 < rate <= 80
    assert batcher.expected_wait_s(40) == pytest.approx(40 / rate)
    model.release.clear()
    held = asyncio.ensure_future(batcher.submit(["e"]))
    await until(lambda: model.concurrent == 1, '"e" is inside the model')
    queued = [asyncio.ensure_future(batcher.submit([f"q{i}"])) for i in range(8)]
    await until(lambda: batcher.queue_depth == 8, "the next ones wait")
    assert batcher.expected_wait_s(2) == pytest.approx(10 / rate)
    model.release.set()
    await asyncio.gather(held, *queued)


async def test_a_hung_batch_fails_its_calls_at_the_limit_and_the_owner_is_told() -> None:
    model = RecordingModel()
    model.release.clear()  # the model hangs
    told: list[float] = []
    batcher: DynamicBatcher[str] = DynamicBatcher(
        model,
        max_batch_texts=4,
        max_batch_delay_s=0.0,
        max_queue_texts=100,
        batch_timeout_s=0.3,
        # The server kills the model process here; that frees the worker thread.
        on_batch_timeout=lambda: (told.append(time.monotonic()), model.release.set()),
    )
    batcher.start()
    started = time.monotonic()
    with pytest.raises(BatchTimeoutError, match=r"within 0\.3 s"):
        await batcher.submit(["stuck"])
    assert time.monotonic() - started >= 0.3  # it waited for the limit
    assert len(told) == 1
    # The loop goes on with the next batch.
    assert await batcher.submit(["next"]) == ["NEXT"]
    await batcher.close()


async def test_a_call_inside_a_hung_batch_stops_waiting_at_its_own_deadline() -> None:
    """The batch time limit (embeddings.model_batch_timeout_s) detects a hung model process;
    it is no request deadline: a call whose batch hangs stops waiting at its deadline (or
    when cancelled, as when Envoy abandons the try), while the batch and the limit go on."""
    model = RecordingModel()
    model.release.clear()  # the model hangs on the call's batch
    told: list[bool] = []
    batcher: DynamicBatcher[str] = DynamicBatcher(
        model,
        max_batch_texts=4,
        max_batch_delay_s=0.0,
        max_queue_texts=100,
        batch_timeout_s=3600.0,
        on_batch_timeout=lambda: told.append(True),
    )
    batcher.start()
    stuck = asyncio.ensure_future(batcher.submit(["stuck"]))
    await until(lambda: model.concurrent == 1, "the call's batch is inside the model")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.submit(["late"]), timeout=0.05)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stuck, timeout=0.05)
    # Both calls have returned while the model still holds the batch, long before its limit.
    assert model.concurrent == 1 and not told
    model.release.set()
    assert await batcher.submit(["next"]) == ["NEXT"]
    await batcher.close()
    assert ["late"] not in model.batches


async def test_fail_queued_fails_every_waiting_call_at_once() -> None:
    model = RecordingModel()
    model.release.clear()
    batcher = make_batcher(model, max_batch_texts=1, max_batch_delay_s=0.0)
    running = asyncio.ensure_future(batcher.submit(["first"]))
    await until(lambda: model.concurrent == 1, '"first" is in the model')
    waiting = [asyncio.ensure_future(batcher.submit([f"w{i}"])) for i in range(2)]
    await until(lambda: batcher.queue_depth == 2, "these two wait in the queue")
    assert batcher.fail_queued(ConnectionError("model gone")) == 2
    for call in waiting:
        with pytest.raises(ConnectionError):
            await call
    model.release.set()
    assert await running == ["FIRST"]
    await batcher.close()


async def test_an_unexpected_error_fails_the_batch_and_the_loop_goes_on() -> None:
    calls = 0

    def flaky(texts: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return []  # a bug: fewer results than texts
        return [text.upper() for text in texts]

    batcher: DynamicBatcher[str] = DynamicBatcher(
        flaky, max_batch_texts=4, max_batch_delay_s=0.0, max_queue_texts=100
    )
    batcher.start()
    with pytest.raises(ValueError):
        await batcher.submit(["a"])
    assert await batcher.submit(["b"]) == ["B"]
    await batcher.close()
