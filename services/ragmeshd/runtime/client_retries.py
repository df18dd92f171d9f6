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
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from ragmeshd import defaults
from ragmeshd.runtime.api import API_FILES

PUSHBACK_TRAILER = "grpc-retry-pushback-ms"

# Methods a retry cannot harm, declared in the protos (`option idempotency_level`): reads
# (NO_SIDE_EFFECTS), and writes that store the same result however often they run (IDEMPOTENT:
# UpsertDocuments replaces by id; DeleteDocuments of an absent id is a no-op). Not creations
# (a second CreateCollection says ALREADY_EXISTS), not streams, nothing that records a new
# interaction. One declaration for both retriers: Envoy retries these on another replica
# (supervisor/plan.py), the project's clients retry them below.
_RETRY_SAFE_LEVELS = frozenset(
    {descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT}
)


def _retry_safe(method: MethodDescriptor) -> bool:
    if method.client_streaming or method.server_streaming:
        return False  # a stream may have been partly consumed: never sent twice
    return method.GetOptions().idempotency_level in _RETRY_SAFE_LEVELS


def _service_key(service: ServiceDescriptor) -> str:
    """ragmesh.search.v1.SearchService -> "search", the plan's name for the service."""
    return str(service.full_name.split(".")[1])


# The retry-safe methods by service ("search": ("ListCollections", ...)), in proto order.
IDEMPOTENT_BY_SERVICE: dict[str, tuple[str, ...]] = {
    _service_key(service): tuple(m.name for m in service.methods if _retry_safe(m))
    for file in API_FILES
    for service in file.services_by_name.values()
}
# The same as gRPC method paths ("/ragmesh.search.v1.SearchService/Search").
IDEMPOTENT_METHODS = frozenset(
    f"/{service.full_name}/{method.name}"
    for file in API_FILES
    for service in file.services_by_name.values()
    for method in service.methods
    if _retry_safe(method)
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
