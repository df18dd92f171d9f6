"""The language model: llama.cpp's `Llama` behind an asyncio interface.

    engine = LlmEngine(path, context_window_tokens=2048, threads=2, max_waiting=4)
    await engine.load()        # reads the .gguf (in the model's thread)
    await engine.warm_up()     # one short generation; `ready` turns true when it passes
    async for event in engine.generate(turns, GenerationParams(max_tokens=64)):
        ...                    # str pieces of the reply, then one GenerationStats

llama.cpp generates one sequence at a time, so the engine runs every generation in one
dedicated thread (the event loop stays free to serve other calls, health checks and
metrics) and admits one generation at a time: the others wait in FIFO order, at most
`max_waiting` of them; one more raises QueueFullError at once. A caller that stops reading
(its call was cancelled, its deadline passed) stops its generation before the next token,
and the next waiting caller starts as soon as the thread has let go of the model.

Nothing here knows gRPC: the servicer maps QueueFullError to RESOURCE_EXHAUSTED,
NotReadyError to UNAVAILABLE and PromptTooLongError to INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ragmeshd.llm.generation import run_generation
from ragmeshd.llm.records import (
    FINISH_CANCELLED,
    FINISH_LENGTH,
    ROLES,
    ChatTurn,
    GenerationParams,
    GenerationStats,
    NotReadyError,
    PromptTooLongError,
    QueueFullError,
)

__all__ = [
    "ChatTurn",
    "GenerationParams",
    "GenerationStats",
    "LlmEngine",
    "NotReadyError",
    "PromptTooLongError",
    "QueueFullError",
]

_log = logging.getLogger("ragmesh.llm")

# The warm-up: a short, fixed generation that proves the model loads, formats a chat and
# samples tokens before the server reports SERVING.
WARM_UP_TURNS = (("user", "Say OK."),)
WARM_UP_MAX_TOKENS = 4


# An event of the stream between the model's thread and the caller.
_Event = str | GenerationStats | BaseException


class LlmEngine:
    """One llama.cpp model, one generation at a time, a bounded FIFO of waiting callers."""

    def __init__(
        self,
        model_path: Path | str,
        *,
        context_window_tokens: int,
        threads: int,
        max_waiting: int,
        batch_tokens: int = 512,
        on_waiting_changed: Callable[[int], None] | None = None,
        on_generation: Callable[[GenerationStats], None] | None = None,
    ) -> None:
        if context_window_tokens < 64:
            raise ValueError("the context window must hold at least 64 tokens")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if max_waiting < 0:
            raise ValueError("max_waiting must be 0 or more")
        self.model_path = Path(model_path)
        self.context_window_tokens = context_window_tokens
        self.threads = threads
        self.max_waiting = max_waiting
        self._batch_tokens = batch_tokens
        self._on_waiting_changed = on_waiting_changed
        self._on_generation = on_generation
        # The one thread that touches the model after loading.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm")
        self._model: Any = None
        self._formatter: Any = None
        self._turn = asyncio.Lock()
        self._waiting = 0
        self.ready = False
        self.model_name = self.model_path.name.removesuffix(".gguf")
        # Counters over the generations served (the warm-up excluded).
        self.generations_run = 0
        self.tokens_generated = 0
        # Generations stopped because their caller left.
        self.generations_cancelled = 0
        self._time_to_first_token_total_s = 0.0
        self._tokens_per_second_total = 0.0

    # --- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the model file into memory (in the model's thread)."""
        if not self.model_path.is_file():
            raise FileNotFoundError(f"no model file at {self.model_path}")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        from llama_cpp import Llama, llama_chat_format

        started = time.monotonic()
        model = Llama(
            model_path=str(self.model_path),
            n_ctx=self.context_window_tokens,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            n_batch=min(self._batch_tokens, self.context_window_tokens),
            verbose=False,
        )
        template = model.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{self.model_path.name} carries no chat template")
        eos = model.token_eos()
        bos = model.token_bos()
        self._formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=model._model.token_get_text(eos) if eos != -1 else "",
            bos_token=model._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )
        self._model = model
        _log.info(
            "model loaded",
            extra={
                "model": self.model_name,
                "path": str(self.model_path),
                "context_window_tokens": self.context_window_tokens,
                "threads": self.threads,
                "load_s": round(time.monotonic() - started, 3),
            },
        )

    async def warm_up(self) -> GenerationStats:
        """Run one short generation; on success the engine is ready to serve."""
        turns = [ChatTurn(role, content) for role, content in WARM_UP_TURNS]
        stats: GenerationStats | None = None
        async for event in self._generate(
            turns, GenerationParams(max_tokens=WARM_UP_MAX_TOKENS), count=False
        ):
            if isinstance(event, GenerationStats):
                stats = event
        if stats is None or (stats.completion_tokens == 0 and stats.finish_reason == FINISH_LENGTH):
            raise RuntimeError(f"the warm-up generation produced nothing: {stats}")
        self.ready = True
        _log.info(
            "warm-up passed",
            extra={
                "time_to_first_token_ms": round(stats.time_to_first_token_s * 1000, 1),
                "tokens": stats.completion_tokens,
            },
        )
        return stats

    async def close(self) -> None:
        """Stop taking generations, wait for the running one to stop, free the model."""
        self.ready = False
        async with self._turn:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._free)
        self._executor.shutdown(wait=True)

    def _free(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    # --- what callers see ------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Callers waiting for the model now (the one generating not counted)."""
        return self._waiting

    @property
    def busy(self) -> bool:
        """Whether a generation holds the model now."""
        return self._turn.locked()

    @property
    def mean_time_to_first_token_s(self) -> float:
        return (
            self._time_to_first_token_total_s / self.generations_run
            if self.generations_run
            else 0.0
        )

    @property
    def mean_tokens_per_second(self) -> float:
        return self._tokens_per_second_total / self.generations_run if self.generations_run else 0.0

    async def count_prompt_tokens(self, turns: Sequence[ChatTurn]) -> int:
        """How many tokens `turns` make once formatted with the model's chat template."""
        return len(await asyncio.to_thread(self._prompt_tokens, turns))

    def generate(
        self, turns: Sequence[ChatTurn], params: GenerationParams
    ) -> AsyncIterator[str | GenerationStats]:
        """Stream the reply to `turns`: pieces of text, then one GenerationStats.

        Raises NotReadyError before the warm-up passed, PromptTooLongError when the prompt
        fills the context window, QueueFullError when `max_waiting` callers already wait.
        Closing the iterator (or cancelling the task reading it) stops the generation."""
        if not self.ready:
            raise NotReadyError("the language model is loading")
        return self._generate(turns, params, count=True)

    # --- the machinery ---------------------------------------------------------------------

    def _prompt_tokens(self, turns: Sequence[ChatTurn]) -> list[int]:
        model, formatter = self._model, self._formatter
        if model is None or formatter is None:
            raise NotReadyError("the language model is not loaded")
        for turn in turns:
            if turn.role not in ROLES:
                raise ValueError(f"unknown role {turn.role!r}; use one of {', '.join(ROLES)}")
        formatted = formatter(messages=[{"role": t.role, "content": t.content} for t in turns])
        tokens: list[int] = model.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        return tokens

    async def _generate(
        self, turns: Sequence[ChatTurn], params: GenerationParams, *, count: bool
    ) -> AsyncIterator[str | GenerationStats]:
        if params.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        prompt = await asyncio.to_thread(self._prompt_tokens, turns)
        room = self.context_window_tokens - len(prompt)
        if room < 1:
            raise PromptTooLongError(
                f"the prompt is {len(prompt)} tokens long and the model's context window"
                f" holds {self.context_window_tokens} (llm.context_window_tokens): shorten it"
            )
        max_tokens = min(params.max_tokens, room)

        queued = time.monotonic()
        await self._wait_for_turn()
        # The model is ours from here until the thread's run ends (released by its callback,
        # not by this coroutine, so a caller that leaves never frees the model while the
        # thread still uses it).
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[_Event] = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: _Event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop has closed: nobody reads any more
                cancel.set()

        try:
            run = loop.run_in_executor(
                self._executor,
                self._run,
                prompt,
                max_tokens,
                params,
                time.monotonic() - queued,
                emit,
                cancel,
            )
        except BaseException:
            self._turn.release()
            raise
        run.add_done_callback(lambda _: self._turn.release())
        try:
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, GenerationStats):
                    if count:
                        self._count(event)
                    yield event
                    return
                yield event
        finally:
            cancel.set()

    async def _wait_for_turn(self) -> None:
        # A caller that would have to wait finds the queue full at max_waiting waiters.
        must_wait = self._turn.locked() or self._waiting > 0
        if must_wait and self._waiting >= self.max_waiting:
            raise QueueFullError(
                f"the language model is busy and {self._waiting} requests already wait"
                f" for it (llm.max_waiting={self.max_waiting}); retry later"
            )
        self._set_waiting(self._waiting + 1)
        try:
            await self._turn.acquire()
        finally:
            self._set_waiting(self._waiting - 1)

    def _set_waiting(self, waiting: int) -> None:
        self._waiting = waiting
        if self._on_waiting_changed is not None:
            self._on_waiting_changed(waiting)

    def _count(self, stats: GenerationStats) -> None:
        self.generations_run += 1
        self.tokens_generated += stats.completion_tokens
        self._time_to_first_token_total_s += stats.time_to_first_token_s
        self._tokens_per_second_total += stats.tokens_per_second
        if self._on_generation is not None:
            self._on_generation(stats)

    def _run(
        self,
        prompt: list[int],
        max_tokens: int,
        params: GenerationParams,
        queue_s: float,
        emit: Callable[[_Event], None],
        cancel: threading.Event,
    ) -> None:
        """One generation, in the model's thread: emits text pieces, then the stats (or the
        exception that ended it)."""
        try:
            model = self._model
            if model is None:
                raise NotReadyError("the language model is not loaded")
            stats = run_generation(model, prompt, max_tokens, params, queue_s, emit, cancel)
            if stats.finish_reason == FINISH_CANCELLED:
                self.generations_cancelled += 1
            emit(stats)
        except Exception as exc:
            emit(exc)
