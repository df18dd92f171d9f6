"""Circuit breaker transitions and retry behaviour, on a controllable clock."""

from __future__ import annotations

import pytest

from services.runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    RetryPolicy,
    call_with_retries,
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


async def test_retries_retryable_failures_then_succeeds() -> None:
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("blip")
        return "done"

    policy = RetryPolicy(attempts=3, backoff_base_s=0.001, backoff_max_s=0.01)
    assert await call_with_retries(flaky, policy, is_retryable=lambda e: True) == "done"
    assert attempts == 3


async def test_does_not_retry_what_is_not_retryable() -> None:
    attempts = 0

    async def bad() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("your fault")

    policy = RetryPolicy(attempts=5, backoff_base_s=0.001, backoff_max_s=0.01)
    with pytest.raises(ValueError):
        await call_with_retries(bad, policy, is_retryable=lambda e: isinstance(e, ConnectionError))
    assert attempts == 1


def test_backoff_is_jittered_under_an_exponential_cap() -> None:
    policy = RetryPolicy(attempts=5, backoff_base_s=0.1, backoff_max_s=0.5)
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap / 2
