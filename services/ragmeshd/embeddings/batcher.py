"""Server-side dynamic batching.

Concurrent calls put their texts on one bounded queue. A single loop takes up to
`max_batch_texts` texts at a time, waiting at most `max_batch_delay_s` after the oldest
arrived for a batch to fill, sorts the batch by length (similar lengths pad less), and runs
it in one worker thread, so the event loop never blocks and the model is used by one batch at
a time (in the server that thread hands the batch to the model process, worker.py). Texts of
a call that was cancelled or timed out are dropped from the queue.

The loop never dies silently: a batch that takes longer than `batch_timeout_s` fails its
calls at once with BatchTimeoutError and calls `on_batch_timeout` (the server then kills
and replaces the model process, which frees the worker thread); any other unexpected error
fails the batch's calls, is logged, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace

from ragmeshd.runtime import metrics
from ragmeshd.runtime.tracing import tracer

_log = logging.getLogger("ragmesh.embeddings.batcher")

Result = TypeVar("Result")
# Runs one batch in the worker thread: texts in, one result per text out, same order.
BatchFunction = Callable[[list[str]], Sequence[Result]]


class QueueFullError(Exception):
    """The queue has no room for the call's texts."""


class BatcherClosedError(Exception):
    """The batcher is shutting down and takes no new work."""


class BatchTimeoutError(Exception):
    """The batch holding the call's texts took longer than the batch time limit."""


@dataclass
class _Call(Generic[Result]):
    """One submitted call: its texts and where their results go."""

    texts: list[str]
    done: asyncio.Future[list[Result]]
    results: list[Result | None] = field(default_factory=list)
    remaining: int = 0
    # The submitting RPC's trace context: the batch that runs its texts links to it.
    trace_context: otel_context.Context = field(default_factory=otel_context.get_current)


@dataclass
class _Entry(Generic[Result]):
    """One queued text: which call it belongs to and where in that call."""

    call: _Call[Result]
    index: int
    enqueued_at: float


@dataclass
class BatcherStats:
    """Counters since start, for Info and the benchmark."""

    batches: int = 0
    texts: int = 0
    # Texts per second the model gets through, smoothed over recent batches that were at
    # least half full (small batches pay the per-pass cost on few texts; 0: none yet).
    texts_per_s: float = 0.0


# Weight of the newest batch in the smoothed throughput.
_THROUGHPUT_SMOOTHING = 0.2


class DynamicBatcher(Generic[Result]):
    """Merges concurrent calls into batches for one model."""

    def __init__(
        self,
        run_batch: BatchFunction[Result],
        *,
        max_batch_texts: int,
        max_batch_delay_s: float,
        max_queue_texts: int,
        batch_timeout_s: float | None = None,
        on_batch_timeout: Callable[[], None] | None = None,
        bulk_batch_chars: int | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._batch_timeout_s = batch_timeout_s
        self._on_batch_timeout = on_batch_timeout
        self._max_batch_texts = max_batch_texts
        self._max_batch_delay_s = max_batch_delay_s
        self._max_queue_texts = max_queue_texts
        # A batch of bulk texts only holds about this many characters (at least one text), so
        # an interactive call arriving while it runs waits one short batch, not a full one.
        self._bulk_batch_chars = bulk_batch_chars
        self._queue: deque[_Entry[Result]] = deque()
        # The bulk lane (writes' passages): served only when no interactive text waits, never
        # refused for length: a bulk call waits for room instead (backpressure).
        self._bulk: deque[_Entry[Result]] = deque()
        self._bulk_room = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._closing = False
        # One thread: the model is never used by two batches at once.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._loop_task: asyncio.Task[None] | None = None
        self.stats = BatcherStats()

    @property
    def queue_depth(self) -> int:
        """Texts waiting in both lanes (what the tests watch the batcher by)."""
        return len(self._queue) + len(self._bulk)

    def expected_wait_s(self, more_texts: int = 0) -> float:
        """How long `more_texts` added now would wait for their results behind the queue, at
        the throughput measured on full batches (0 until one has run). Load shedding refuses
        calls that would wait longer than the server may keep them
        (ragmeshd/embeddings/servicer.py)."""
        if self.stats.texts_per_s <= 0:
            return 0.0
        # Bulk texts do not count: interactive ones go before them.
        return (len(self._queue) + more_texts) / self.stats.texts_per_s

    def start(self) -> asyncio.Task[None]:
        """Start the batch loop; its task (it ends only when the batcher closes)."""
        metrics.QUEUE_DEPTH.set_function(lambda: len(self._queue) + len(self._bulk))
        self._loop_task = asyncio.create_task(self._batch_loop(), name="batcher")
        return self._loop_task

    def fail_queued(self, error: Exception) -> int:
        """Fail every call still waiting in the queue with `error` (the model is gone);
        returns how many calls that was."""
        calls = {id(entry.call): entry.call for entry in (*self._queue, *self._bulk)}
        self._queue.clear()
        self._bulk.clear()
        for call in calls.values():
            if not call.done.done():
                call.done.set_exception(error)
        return len(calls)

    async def close(self) -> None:
        """Stop taking calls, finish everything queued, stop the worker."""
        self._closing = True
        self._wakeup.set()
        self._bulk_room.set()
        if self._loop_task is not None:
            await self._loop_task
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str], *, bulk: bool = False) -> list[Result]:
        """Queue `texts` and wait for their results, in order.

        Raises QueueFullError when the queue cannot hold them; a `bulk` call instead waits
        until the bulk lane has room (or it is empty). Cancelling the awaiting task (a
        cancelled RPC or an expired deadline) drops the call's texts from the queue.
        """
        if self._closing:
            raise BatcherClosedError("the server is shutting down")
        if bulk:
            while not (
                self._closing
                or not self._bulk
                or len(self._bulk) + len(texts) <= self._max_queue_texts
            ):
                self._bulk_room.clear()
                await self._bulk_room.wait()
            if self._closing:
                raise BatcherClosedError("the server is shutting down")
        elif len(self._queue) + len(texts) > self._max_queue_texts:
            raise QueueFullError(
                f"the embedding queue is full ({len(self._queue)} of {self._max_queue_texts}"
                " texts waiting); retry with backoff"
            )
        call: _Call[Result] = _Call(
            texts=texts,
            done=asyncio.get_running_loop().create_future(),
            results=[None] * len(texts),
            remaining=len(texts),
        )
        now = time.monotonic()
        lane = self._bulk if bulk else self._queue
        lane.extend(_Entry(call, index, now) for index in range(len(texts)))
        self._wakeup.set()
        try:
            return await call.done
        except asyncio.CancelledError:
            self._drop(call)
            raise

    def _drop(self, call: _Call[Result]) -> None:
        self._queue = deque(entry for entry in self._queue if entry.call is not call)
        self._bulk = deque(entry for entry in self._bulk if entry.call is not call)
        self._bulk_room.set()

    async def _batch_loop(self) -> None:
        while True:
            if not self._queue and not self._bulk:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_for_fill()
            batch = self._take_batch()
            if not batch:
                continue
            try:
                await self._run(batch)
            except Exception as exc:  # a bug must not stop every later call too
                _log.exception("batch failed unexpectedly", extra={"texts": len(batch)})
                _fail(batch, exc)

    async def _wait_for_fill(self) -> None:
        """Wait until a full batch is queued or the oldest text has waited long enough."""
        while len(self._queue) + len(self._bulk) < self._max_batch_texts and not self._closing:
            if not self._queue and not self._bulk:
                return
            heads = [lane[0].enqueued_at for lane in (self._queue, self._bulk) if lane]
            waited = time.monotonic() - min(heads)
            left = self._max_batch_delay_s - waited
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=left)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Entry[Result]]:
        batch: list[_Entry[Result]] = []
        while self._queue and len(batch) < self._max_batch_texts:
            entry = self._queue.popleft()
            if not entry.call.done.done():
                batch.append(entry)
        if not batch:
            # Interactive texts run alone (their batch stays short); bulk ones only when
            # none waits, in batches of at most bulk_batch_chars.
            chars = 0
            limit = self._bulk_batch_chars
            while self._bulk and len(batch) < self._max_batch_texts:
                entry = self._bulk[0]
                size = len(entry.call.texts[entry.index])
                if batch and limit is not None and chars + size > limit:
                    break
                self._bulk.popleft()
                if not entry.call.done.done():
                    batch.append(entry)
                    chars += size
            self._bulk_room.set()
        # Longest first, as sentence-transformers does: similar lengths share padding.
        batch.sort(key=lambda entry: len(entry.call.texts[entry.index]), reverse=True)
        return batch

    async def _run(self, batch: list[_Entry[Result]]) -> None:
        texts = [entry.call.texts[entry.index] for entry in batch]
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        metrics.BATCH_SIZE.observe(len(batch))
        for entry in batch:
            metrics.QUEUE_SECONDS.observe(now - entry.enqueued_at)
        try:
            with _batch_span(batch):
                started = time.monotonic()
                running = loop.run_in_executor(self._executor, self._run_batch, texts)
                results = await self._within_time_limit(running, batch)
                self._measure(len(texts), time.monotonic() - started)
        except Exception as exc:
            _fail(batch, exc)
            return
        self.stats.batches += 1
        self.stats.texts += len(texts)
        for entry, result in zip(batch, results, strict=True):
            call = entry.call
            if call.done.done():
                continue
            call.results[entry.index] = result
            call.remaining -= 1
            if call.remaining == 0:
                call.done.set_result(list(call.results))  # type: ignore[arg-type]

    def _measure(self, texts: int, seconds: float) -> None:
        if texts * 2 < self._max_batch_texts:
            return
        rate = texts / max(seconds, 1e-6)
        previous = self.stats.texts_per_s
        self.stats.texts_per_s = (
            rate if previous <= 0 else previous + _THROUGHPUT_SMOOTHING * (rate - previous)
        )

    async def _within_time_limit(
        self, running: asyncio.Future[Sequence[Result]], batch: list[_Entry[Result]]
    ) -> Sequence[Result]:
        """The batch's results; past the time limit its calls fail at once, the owner is
        told (it frees the worker thread), and the loop waits for the thread to come back
        before the next batch uses it."""
        if self._batch_timeout_s is None:
            return await running
        done, _ = await asyncio.wait({running}, timeout=self._batch_timeout_s)
        if done:
            return running.result()
        error = BatchTimeoutError(
            f"the model did not finish a batch of {len(batch)} texts within"
            f" {self._batch_timeout_s:.1f} s; it is being restarted"
        )
        _log.error("batch hung", extra={"texts": len(batch), "limit_s": self._batch_timeout_s})
        _fail(batch, error)
        if self._on_batch_timeout is not None:
            self._on_batch_timeout()
        await asyncio.gather(running, return_exceptions=True)
        raise error


def _fail(batch: list[_Entry[Result]], error: BaseException) -> None:
    for entry in batch:
        if not entry.call.done.done():
            entry.call.done.set_exception(error)


def _batch_span(batch: list[_Entry[Result]]) -> AbstractContextManager[trace.Span]:
    """A "batch encode" span around one model run. A batch serves several calls: the span is
    a child of the call that waited longest and links to the others."""
    calls = list({id(entry.call): entry.call for entry in batch}.values())
    oldest = min(batch, key=lambda entry: entry.enqueued_at).call
    links = [
        trace.Link(span_context)
        for call in calls
        if call is not oldest
        and (span_context := trace.get_current_span(call.trace_context).get_span_context()).is_valid
    ]
    return tracer.start_as_current_span(
        "batch encode",
        context=oldest.trace_context,
        links=links,
        attributes={"batch.size": len(batch), "batch.calls": len(calls)},
    )
