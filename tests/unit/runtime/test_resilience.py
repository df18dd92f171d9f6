"""Circuit breaker transitions, on a controllable clock."""

from __future__ import annotations

import asyncio

import pytest

from ragmeshd.runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    Verdict,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def fail() -> None:
    raise ConnectionError("down")


async def succeed() -> str:
    return "ok"


async def test_breaker_opens_after_threshold_and_fails_fast() -> None:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(
        "dep",
        failure_threshold=3,
        recovery_s=10,
        clock=clock,
        on_change=lambda _name, state: changes.append(state),
    )
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(succeed)
    assert changes == [BreakerState.OPEN]


async def test_half_open_probe_closes_on_success_and_reopens_on_failure() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("dep", failure_threshold=1, recovery_s=5, clock=clock)
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    clock.now = 5
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(ConnectionError):
        await breaker.call(fail)  # the probe fails: open again, for another 5 s
    assert breaker.state is BreakerState.OPEN
    clock.now = 10
    assert await breaker.call(succeed) == "ok"
    assert breaker.state is BreakerState.CLOSED


async def test_only_one_probe_at_a_time_when_half_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("dep", failure_threshold=1, recovery_s=1, clock=clock)
    breaker.record_failure()
    clock.now = 1
    assert breaker.allow()
    assert not breaker.allow()


async def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker("dep", failure_threshold=2, recovery_s=1, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


async def test_a_cancelled_call_is_not_a_failure_but_frees_the_probe() -> None:
    """The caller giving up says nothing about the dependency: no failure is counted, and a
    half-open probe that was cancelled lets the next call probe instead."""
    clock = FakeClock()
    breaker = CircuitBreaker("dep", failure_threshold=1, recovery_s=1, clock=clock)

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await breaker.call(cancelled)
    assert breaker.state is BreakerState.CLOSED

    breaker.record_failure()
    clock.now = 1
    with pytest.raises(asyncio.CancelledError):
        await breaker.call(cancelled)  # the probe was cancelled
    assert breaker.state is BreakerState.HALF_OPEN
    assert await breaker.call(succeed) == "ok"  # the next call may probe
    assert breaker.state is BreakerState.CLOSED


async def test_guard_records_what_the_judge_says() -> None:
    """Every breaker user goes through guard (or call, built on it): a body that returns is
    a success, one that raises is what `judge` says (a refused request is an answer, not a
    failure), and while open the body never runs."""
    clock = FakeClock()
    breaker = CircuitBreaker("dep", failure_threshold=1, recovery_s=7, clock=clock)

    def refused_is_an_answer(exc: BaseException) -> Verdict:
        return Verdict.SUCCESS if isinstance(exc, ValueError) else Verdict.FAILURE

    with pytest.raises(ValueError):
        async with breaker.guard(refused_is_an_answer):
            raise ValueError("bad request")
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(ConnectionError):
        await breaker.call(fail, refused_is_an_answer)
    assert breaker.state is BreakerState.OPEN
    ran = False
    with pytest.raises(CircuitOpenError, match="not calling it for up to 7 s"):
        async with breaker.guard():
            ran = True
    assert not ran
