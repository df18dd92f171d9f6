"""Retries of the project's own clients outside the mesh (`ragmesh ingest`, `search`,
`eval`): only methods declared idempotent here, on UNAVAILABLE and RESOURCE_EXHAUSTED, after
the server's pushback when it gives one, within the call's deadline.

Inside the mesh Envoy retries (envoy/); this is for the client in front of it, which Envoy's
own retries and shedding answer with those two codes. A server asks for a pause with the
`grpc-retry-pushback-ms` trailer (gRFC A6): a non-negative number of milliseconds is waited
before the next try, a negative or malformed one means "do not retry". Without it the pause
is exponential with full jitter. Benches and the load test never use this: they count
refusals.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from ragmeshd import defaults

PUSHBACK_TRAILER = "grpc-retry-pushback-ms"

# Methods a retry cannot harm, by service: reads, and writes that store the same result
# however often they run (UpsertDocuments replaces by id; DeleteDocuments of an absent id is a
# no-op). Not creations (a second CreateCollection says ALREADY_EXISTS), not streams, nothing
# that records a new interaction. One declaration for both retriers: Envoy retries these on
# another replica (supervisor/plan.py), the project's clients retry them below.
IDEMPOTENT_BY_SERVICE: dict[str, tuple[str, ...]] = {
    "embeddings": ("Embed", "Info"),
    "search": (
        "ListCollections",
        "GetCollection",
        "UpsertDocuments",
        "DeleteDocuments",
        "GetDocument",
        "ListDocuments",
        "CountDocuments",
        "Search",
    ),
    "coordinator": ("AugmentQuery", "RecordFeedback", "GetInteraction"),
    # Generate is a stream that spends the model's time: never sent twice.
    "llm": ("Info",),
}
_PACKAGES = {
    "embeddings": "ragmesh.embeddings.v1.EmbeddingsService",
    "search": "ragmesh.search.v1.SearchService",
    "coordinator": "ragmesh.coordinator.v1.CoordinatorService",
    "llm": "ragmesh.llm.v1.LlmService",
}
IDEMPOTENT_METHODS = frozenset(
    f"/{_PACKAGES[service]}/{method}"
    for service, methods in IDEMPOTENT_BY_SERVICE.items()
    for method in methods
)
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = defaults.CLIENT_RETRY_MAX_ATTEMPTS
    initial_backoff_s: float = defaults.CLIENT_RETRY_INITIAL_BACKOFF_S
    max_backoff_s: float = defaults.CLIENT_RETRY_MAX_BACKOFF_S


def pushback_s(trailers: Any) -> float | None:
    """The server's pushback in seconds; -1.0 for "do not retry"; None when it gave none."""
    for key, value in trailers or ():
        if key == PUSHBACK_TRAILER:
            text = value.decode() if isinstance(value, bytes) else str(value)
            try:
                milliseconds = int(text.strip())
            except ValueError:
                return -1.0
            return -1.0 if milliseconds < 0 else milliseconds / 1000
    return None


def retry_delay_s(
    error: grpc.aio.AioRpcError,
    attempt: int,
    policy: RetryPolicy,
    jitter: Callable[[float, float], float] = random.uniform,
) -> float | None:
    """How long to wait before try `attempt + 1` after `error`, or None to give up."""
    if error.code() not in RETRYABLE_CODES or attempt >= policy.max_attempts:
        return None
    pushed = pushback_s(error.trailing_metadata())
    if pushed is not None:
        return None if pushed < 0 else pushed
    ceiling = min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (attempt - 1))
    return jitter(0.0, ceiling)


class RetryIdempotent(grpc.aio.UnaryUnaryClientInterceptor):
    """Retries unary calls of IDEMPOTENT_METHODS; every other call passes through once."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self.retries = 0

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method not in IDEMPOTENT_METHODS:
            return await continuation(details, request)
        deadline = None if details.timeout is None else time.monotonic() + details.timeout
        attempt = 1
        while True:
            call = await continuation(details, request)
            try:
                await call
                return call
            except grpc.aio.AioRpcError as error:
                delay = retry_delay_s(error, attempt, self.policy)
                left = None if deadline is None else deadline - time.monotonic()
                if delay is None or (left is not None and delay >= left):
                    raise
            await asyncio.sleep(delay)
            self.retries += 1
            attempt += 1
            if deadline is not None:
                details = grpc.aio.ClientCallDetails(
                    details.method,
                    max(deadline - time.monotonic(), 0.001),
                    details.metadata,
                    details.credentials,
                    details.wait_for_ready,
                )
