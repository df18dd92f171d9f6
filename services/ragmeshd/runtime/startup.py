"""Retries at start-up, the one place a process retries on its own: waiting for a database
that is still starting, a model process that failed to load. Calls between services are
never retried here (Envoy is the mesh's one retry layer, ragmeshd/envoy/limits.py).

The policy is tenacity's (a library rather than another hand-written loop; chosen over
stamina because tenacity takes the per-call hooks this log line needs and an injectable
sleep, and stamina adds jitter by default): `attempts` tries, waiting backoff_base_s * 2^(n-1)
after the n-th failure, each retry logged with the error, the last failure raised as is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import tenacity

T = TypeVar("T")


async def retry_at_startup(
    operation: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    backoff_base_s: float,
    retry_on: tuple[type[BaseException], ...],
    log: logging.Logger,
    message: str,
    log_extra: Mapping[str, Any] | None = None,
) -> T:
    """`await operation()`, retried on `retry_on` as the module says; raises the last
    failure (or at once anything not in `retry_on`)."""

    def log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            message,
            extra={
                "attempt": state.attempt_number,
                "attempts": attempts,
                "retry_in_s": state.next_action.sleep if state.next_action else 0.0,
                "error": f"{type(exc).__name__}: {exc}",
                **(log_extra or {}),
            },
        )

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=backoff_base_s, exp_base=2),
        retry=tenacity.retry_if_exception_type(retry_on),
        before_sleep=log_retry,
        reraise=True,
    )
    return await retrying(operation)
