"""The engine with the real packaged model (SmolLM2-135M, ~90 MB): it loads, warms up,
generates, honours max_tokens and stop sequences, admits one generation at a time with a
bounded queue, and a caller that leaves stops its generation.

Conditions, not timings: the tests wait for states (a generation holding the model, a
caller queued), never for a number of milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

pytest.importorskip("llama_cpp")

from ragmeshd.llm.engine import (
    ChatTurn,
    GenerationParams,
    GenerationStats,
    LlmEngine,
    NotReadyError,
    PromptTooLongError,
    QueueFullError,
)
from ragmeshd.llm.packaged import packaged_model_path
from ragmeshd.llm.records import FINISH_LENGTH, FINISH_STOP_SEQUENCE

QUESTION = [ChatTurn("system", "You are brief."), ChatTurn("user", "Name three colours.")]


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LlmEngine]:
    engine = LlmEngine(packaged_model_path(), context_window_tokens=512, threads=2, max_waiting=1)
    await engine.load()
    await engine.warm_up()
    yield engine
    await engine.close()


async def _collect(engine: LlmEngine, params: GenerationParams) -> tuple[str, GenerationStats]:
    text, stats = "", None
    async for event in engine.generate(QUESTION, params):
        if isinstance(event, GenerationStats):
            stats = event
        else:
            text += event
    assert stats is not None
    return text, stats


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for a state of the engine (its own attributes; it offers no event for them)."""
    async with asyncio.timeout(60):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def test_the_packaged_model_is_found_without_importing_its_package() -> None:
    path = packaged_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


async def test_not_ready_before_the_warm_up() -> None:
    cold = LlmEngine(packaged_model_path(), context_window_tokens=256, threads=1, max_waiting=0)
    with pytest.raises(NotReadyError):
        cold.generate(QUESTION, GenerationParams(max_tokens=4))
    await cold.close()


async def test_generates_text_up_to_max_tokens(engine: LlmEngine) -> None:
    before = engine.generations_run
    text, stats = await _collect(engine, GenerationParams(max_tokens=8, temperature=0.0))
    assert text.strip()
    assert 1 <= stats.completion_tokens <= 8
    assert stats.prompt_tokens > 10
    assert stats.time_to_first_token_s > 0
    if stats.finish_reason == FINISH_LENGTH:
        assert stats.completion_tokens == 8
    assert engine.generations_run == before + 1
    assert engine.mean_time_to_first_token_s > 0


async def test_greedy_generation_is_repeatable(engine: LlmEngine) -> None:
    first, _ = await _collect(engine, GenerationParams(max_tokens=12, temperature=0.0))
    second, _ = await _collect(engine, GenerationParams(max_tokens=12, temperature=0.0))
    assert first == second


async def test_a_stop_sequence_ends_the_text_before_it(engine: LlmEngine) -> None:
    free, _ = await _collect(engine, GenerationParams(max_tokens=24, temperature=0.0))
    # A stop sequence taken from the middle of the greedy reply cuts it exactly there.
    words = free.split()
    assert len(words) >= 3, free
    stop = " " + words[2]
    at = free.find(stop)
    cut, stats = await _collect(
        engine, GenerationParams(max_tokens=24, temperature=0.0, stop=(stop,))
    )
    assert stats.finish_reason == FINISH_STOP_SEQUENCE
    assert cut == free[:at]


async def test_a_prompt_longer_than_the_window_is_refused(engine: LlmEngine) -> None:
    long = [ChatTurn("user", "word " * 2000)]
    with pytest.raises(PromptTooLongError):
        async for _ in engine.generate(long, GenerationParams(max_tokens=4)):
            pass


async def test_one_generation_at_a_time_and_a_bounded_queue(engine: LlmEngine) -> None:
    """max_waiting=1: one generates, one waits, the third is refused at once; the waiting
    one runs when the first ends."""
    long = GenerationParams(max_tokens=200, temperature=0.8, seed=1)
    first_started = asyncio.Event()

    async def first() -> None:
        async for _ in engine.generate(QUESTION, long):
            first_started.set()

    running = asyncio.ensure_future(first())
    await first_started.wait()
    assert engine.busy
    second = asyncio.ensure_future(_collect(engine, GenerationParams(max_tokens=4)))
    await _until(lambda: engine.waiting == 1)
    with pytest.raises(QueueFullError):
        async for _ in engine.generate(QUESTION, GenerationParams(max_tokens=4)):
            pass
    running.cancel()
    _, stats = await second
    assert stats.completion_tokens >= 1
    assert stats.queue_s > 0
    assert engine.waiting == 0


async def test_a_caller_that_leaves_stops_its_generation(engine: LlmEngine) -> None:
    """Cancelling the reading task stops the generation between tokens, and the model is
    free for the next caller."""
    tokens_before = engine.tokens_generated
    cancelled_before = engine.generations_cancelled
    seen = 0
    started = asyncio.Event()

    async def reader() -> None:
        nonlocal seen
        async for _ in engine.generate(QUESTION, GenerationParams(max_tokens=400, temperature=1.0)):
            seen += 1
            started.set()

    task = asyncio.ensure_future(reader())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: not engine.busy)
    assert engine.generations_cancelled == cancelled_before + 1
    _, stats = await _collect(engine, GenerationParams(max_tokens=2))
    # The cancelled generation was not counted as served.
    assert engine.tokens_generated == tokens_before + stats.completion_tokens


async def test_a_waiting_caller_that_leaves_frees_its_place(engine: LlmEngine) -> None:
    first_started = asyncio.Event()

    async def first() -> None:
        async for _ in engine.generate(QUESTION, GenerationParams(max_tokens=200, seed=2)):
            first_started.set()

    running = asyncio.ensure_future(first())
    await first_started.wait()
    waiting = asyncio.ensure_future(_collect(engine, GenerationParams(max_tokens=4)))
    await _until(lambda: engine.waiting == 1)
    waiting.cancel()
    await _until(lambda: engine.waiting == 0)
    running.cancel()
    await _until(lambda: not engine.busy)
    _, stats = await _collect(engine, GenerationParams(max_tokens=2))
    assert stats.completion_tokens >= 1
