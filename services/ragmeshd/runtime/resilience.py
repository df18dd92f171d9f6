"""Circuit breakers for calls to other services.

Retries are not made here: Envoy is the mesh's one retry layer (ragmeshd/envoy/limits.py),
with a budget and a different replica per attempt. A caller guards itself against a
dependency that is down as a whole: after repeated failures the breaker opens and calls fail
at once (fail fast) until a probe call succeeds. A call its own caller cancelled says nothing
about the dependency and is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from ragmeshd.runtime import metrics

_log = logging.getLogger("ragmesh.resilience")

T = TypeVar("T")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# The breaker state gauge's values (ragmesh_circuit_breaker_state).
_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class Verdict(enum.Enum):
    """What a call's outcome says about the dependency."""

    SUCCESS = "success"  # it answered (a refusal of a bad request is an answer too)
    FAILURE = "failure"  # it failed, timed out or was overloaded
    NEUTRAL = "neutral"  # nothing (the call was cancelled): count nothing, free the probe


def failure_unless_cancelled(exc: BaseException) -> Verdict:
    """The default judgement of a call that raised: a failure, unless it was cancelled."""
    return Verdict.NEUTRAL if is_cancellation(exc) else Verdict.FAILURE


class CircuitOpenError(Exception):
    """The breaker is open: the dependency failed repeatedly and is not being called."""

    def __init__(self, name: str, recovery_s: float) -> None:
        super().__init__(f"{name} is failing; not calling it for up to {recovery_s:g} s")
        self.name = name
        self.recovery_s = recovery_s


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; after `recovery_s` lets one
    probe call through (half-open): its success closes the breaker, its failure reopens it."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        recovery_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self._failure_threshold = failure_threshold
        self._recovery_s = recovery_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        metrics.BREAKER_STATE.labels(name).set_function(lambda: _STATE_VALUES[self.state])
        # The failure counter exists from the start at 0, so dashboards show a rate of 0
        # rather than no data before the first failure.
        metrics.BREAKER_FAILURES.labels(name)

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._recovery_s:
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a call may go out now (claims the single half-open probe if so)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._probe_in_flight = False
        self._consecutive_failures = 0
        self._set(BreakerState.CLOSED)

    def release(self) -> None:
        """The call ended without saying anything about the dependency (it was cancelled):
        count nothing, but give back the half-open probe it may hold."""
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self._consecutive_failures += 1
        metrics.BREAKER_FAILURES.labels(self.name).inc()
        if self._state is BreakerState.OPEN or (
            self._consecutive_failures >= self._failure_threshold
        ):
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            _log.warning(
                "circuit breaker changed", extra={"breaker": self.name, "state": state.value}
            )
            self._state = state
            if self._on_change is not None:
                self._on_change(self.name, state)

    def record(self, verdict: Verdict) -> None:
        if verdict is Verdict.SUCCESS:
            self.record_success()
        elif verdict is Verdict.FAILURE:
            self.record_failure()
        else:
            self.release()

    @contextlib.asynccontextmanager
    async def guard(
        self, judge: Callable[[BaseException], Verdict] = failure_unless_cancelled
    ) -> AsyncIterator[None]:
        """The one protocol of every guarded call: raise CircuitOpenError while open, else
        run the body and record its outcome: success when it returns, `judge(exc)` when it
        raises (the exception goes on to the caller). A body that streams (yields inside
        the block) is judged when it ends, so `judge` may look at how far it got."""
        if not self.allow():
            raise CircuitOpenError(self.name, self._recovery_s)
        try:
            yield
        except BaseException as exc:
            self.record(judge(exc))
            raise
        self.record_success()

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        judge: Callable[[BaseException], Verdict] = failure_unless_cancelled,
    ) -> T:
        """`await operation()` inside guard(judge)."""
        async with self.guard(judge):
            return await operation()


def is_cancellation(exc: BaseException) -> bool:
    """Whether `exc` means the call was abandoned (by this process's caller or the peer's
    cancellation) rather than failed."""
    if isinstance(exc, asyncio.CancelledError):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() is grpc.StatusCode.CANCELLED
