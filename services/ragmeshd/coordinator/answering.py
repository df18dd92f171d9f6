"""Getting an answer from the routed backend, with circuit breakers and fallback.

The chosen backend is tried first, then the fallback (routing.py). A backend is skipped
while its breaker is open; a BackendError (failure, garbage, hang, empty answer) counts
against its breaker and moves on to the next. Chunks are passed on as the backend streams
them; when a backend fails after some of its text went out, the next answer's first chunk
carries `discard_previous`. When nobody answers, the answer is the retrieved context with a
note saying why (never an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry.trace import Status, StatusCode

from ragmeshd.coordinator.budget import Passage
from ragmeshd.coordinator.llm_backend import AnswerBackend, BackendError, ChatMessage
from ragmeshd.coordinator.prompt import context_only_answer
from ragmeshd.coordinator.routing import Route, Side
from ragmeshd.runtime import metrics
from ragmeshd.runtime.resilience import CircuitBreaker, CircuitOpenError, Verdict
from ragmeshd.runtime.tracing import tracer

_log = logging.getLogger("ragmesh.coordinator.answering")

# Time kept back from the call's deadline to store the interaction and send the summary.
STORE_RESERVE_S = 0.5


class HealthProbe:
    """A backend's health, probed at most once per `cache_s` (concurrent callers share one
    probe)."""

    def __init__(
        self,
        backend: AnswerBackend,
        *,
        cache_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self._cache_s = cache_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._checked_at: float | None = None
        self._healthy = False
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._checked_at is not None and self._clock() - self._checked_at < self._cache_s

    async def healthy(self) -> bool:
        if self._fresh():
            return self._healthy
        async with self._lock:
            if not self._fresh():
                self._healthy = await self._backend.healthy(self._timeout_s)
                self._checked_at = self._clock()
        return self._healthy


@dataclass
class BackendSlot:
    """A configured backend with its breaker and health probe."""

    side: Side
    backend: AnswerBackend
    breaker: CircuitBreaker
    probe: HealthProbe


@dataclass(frozen=True)
class ChunkEvent:
    text: str
    source: Side
    discard_previous: bool = False


@dataclass
class AnswerOutcome:
    """Filled in while the answer streams; complete when the stream ends."""

    answered_by: Side = Side.NONE
    model: str = ""
    failures: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    first_chunk_at: float | None = None
    generation_ms: float = 0.0

    @property
    def answer(self) -> str:
        return "".join(self.parts)


async def _traced_llm_call(slot: BackendSlot, chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """`chunks` inside an "llm call" span (side, model, chunk count; an error on failure)."""
    span = tracer.start_span(
        "llm call", attributes={"llm.side": slot.side.value, "llm.model": slot.backend.model}
    )
    count = 0
    started, outcome = time.perf_counter(), "error"
    try:
        async for text in chunks:
            count += 1
            yield text
        outcome = "ok"
    except BackendError as exc:
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        raise
    finally:
        span.set_attribute("llm.chunks", count)
        span.end()
        metrics.LLM_BACKEND_SECONDS.labels(slot.side.value, outcome).observe(
            time.perf_counter() - started
        )


async def _try_backend(
    slot: BackendSlot,
    messages: list[ChatMessage],
    *,
    max_tokens: int,
    deadline: float,
    sent_any: bool,
    outcome: AnswerOutcome,
) -> AsyncGenerator[ChunkEvent, None]:
    """One backend's answer through its breaker (CircuitBreaker.guard). Raises
    CircuitOpenError while it is open and BackendError when it fails (counted against it).
    When the client goes away (or anything unexpected happens) a backend that had started
    answering worked; one that had not is counted as failed, which also frees a probe."""
    produced = False

    def judge(exc: BaseException) -> Verdict:
        if isinstance(exc, BackendError):
            return Verdict.FAILURE
        return Verdict.SUCCESS if produced else Verdict.FAILURE

    async with slot.breaker.guard(judge):
        time_left = deadline - time.monotonic() - STORE_RESERVE_S
        if time_left <= 0:
            raise BackendError("no time left before the call's deadline")
        chunks = slot.backend.stream_chat(messages, max_tokens=max_tokens, deadline_s=time_left)
        async for text in _traced_llm_call(slot, chunks):
            if outcome.first_chunk_at is None:
                outcome.first_chunk_at = time.perf_counter()
            yield ChunkEvent(text, slot.side, discard_previous=sent_any and not produced)
            produced = True
            outcome.parts.append(text)


def _note_failure(side: Side, exc: BackendError, outcome: AnswerOutcome) -> None:
    """A backend's error text (its HTTP error body, a URL) is for the operator: it goes to the
    log under an id; the client and the stored interaction get only the id and a reason."""
    failure_id = uuid.uuid4().hex[:16]
    outcome.failures.append(
        f"{side.value}: the backend failed (failure id {failure_id}, details in"
        " the coordinator's log)"
    )
    _log.warning(
        "backend failed",
        extra={
            "backend": side.value,
            "error": str(exc),
            "after_text": bool(outcome.parts),
            "failure_id": failure_id,
        },
    )
    outcome.parts.clear()


async def stream_answer(
    route: Route,
    slots: dict[Side, BackendSlot],
    messages: list[ChatMessage],
    passages: Sequence[Passage],
    *,
    max_tokens: int,
    deadline: float,
    outcome: AnswerOutcome,
) -> AsyncIterator[ChunkEvent]:
    """The answer's chunks, in order. `deadline` is a time.monotonic() value."""
    started = time.perf_counter()
    sent_any = False
    try:
        for side in (route.first, route.fallback):
            if side is None or side is Side.NONE:
                continue
            slot = slots[side]
            events = _try_backend(
                slot,
                messages,
                max_tokens=max_tokens,
                deadline=deadline,
                sent_any=sent_any,
                outcome=outcome,
            )
            try:
                # aclosing: a client that leaves mid-answer closes the backend's stream (and
                # its breaker records the outcome) now, not when the generator is collected.
                async with contextlib.aclosing(events):
                    async for event in events:
                        sent_any = True
                        yield event
            except CircuitOpenError:
                outcome.failures.append(f"{side.value}: circuit breaker open")
                continue
            except BackendError as exc:
                _note_failure(side, exc, outcome)
                continue
            outcome.answered_by = side
            outcome.model = slot.backend.model
            return

        why = (
            route.reason
            if route.first is Side.NONE and not outcome.failures
            else "; ".join(outcome.failures)
        )
        text = context_only_answer(why, passages)
        if outcome.first_chunk_at is None:
            outcome.first_chunk_at = time.perf_counter()
        outcome.parts.append(text)
        yield ChunkEvent(text, Side.NONE, discard_previous=sent_any)
    finally:
        outcome.generation_ms = (time.perf_counter() - started) * 1000
