"""Retries with backoff and circuit breakers for calls to other services.

Envoy retries between replicas; these guard a caller against a dependency that is down as a
whole: retry a few times with exponential backoff and full jitter, and stop calling (fail
fast) while the breaker is open.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from services.runtime import metrics

_log = logging.getLogger("ragmesh.resilience")

T = TypeVar("T")

# Codes that mean "try again later", not "your request is wrong".
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# The breaker state gauge's values (ragmesh_circuit_breaker_state).
_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitOpenError(Exception):
    """The breaker is open: the dependency failed repeatedly and is not being called."""


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

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation` through the breaker; raises CircuitOpenError while open."""
        if not self.allow():
            raise CircuitOpenError(f"{self.name} is failing; not calling it for now")
        try:
            result = await operation()
        except BaseException:
            self.record_failure()
            raise
        self.record_success()
        return result


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    backoff_base_s: float
    backoff_max_s: float

    def delay(self, attempt: int) -> float:
        """Full jitter: a random wait up to the exponential bound (attempt counts from 1)."""
        bound = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(0, bound)


async def call_with_retries(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    is_retryable: Callable[[BaseException], bool],
    deadline: float | None = None,
    what: str = "call",
) -> T:
    """Run `operation`, retrying retryable failures with backoff until attempts or the
    deadline (a time.monotonic() value) run out; the last failure is raised."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return await operation()
        except Exception as exc:
            if attempt == policy.attempts or not is_retryable(exc):
                raise
            delay = policy.delay(attempt)
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise
            _log.info(
                "retrying",
                extra={"what": what, "attempt": attempt, "retry_in_s": round(delay, 3)},
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def is_retryable_grpc_error(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in RETRYABLE_CODES
