"""The search service's client of the embeddings service.

Texts go out in Embed calls of at most `embed_batch_texts` (a few at a time, so the server's
batcher can merge them), each with a deadline. Each call is made once: in the mesh Envoy
retries it on another replica (the one retry layer, with a budget); an overloaded service's
RESOURCE_EXHAUSTED is passed on, not retried. A circuit breaker counts calls that fail (or
time out): once open, calls fail at once with EmbeddingsUnavailableError instead of waiting
on a service that is down, and after a recovery period one probe call decides whether it
closes again. A call cancelled by its own caller counts for nothing.

The target is the embeddings server or, in the mesh, Envoy; pass channel credentials for TLS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np

from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmeshd.runtime.channels import open_channel
from ragmeshd.runtime.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    Verdict,
    is_cancellation,
)
from ragmeshd.settings import SearchSettings

_log = logging.getLogger("ragmesh.search.embedder")

T = TypeVar("T")

# Codes that say the embeddings service (not the request) is in trouble.
_SERVICE_FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class EmbeddingsUnavailableError(Exception):
    """The embeddings service is down, overloaded or its breaker is open."""


class EmbeddingsOverloadedError(EmbeddingsUnavailableError):
    """The embeddings service is shedding load (RESOURCE_EXHAUSTED): back off, don't retry."""


class EmbeddingsTimeoutError(Exception):
    """The deadline passed before the texts were embedded."""


class EmbeddingsRejectedError(Exception):
    """The embeddings service refused the texts (e.g. INVALID_ARGUMENT)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class Embeddings:
    """Unit-length vectors, one row per text, and the model that made them."""

    vectors: np.ndarray
    model: str
    dimensions: int


class Embedder:
    def __init__(
        self,
        target: str,
        settings: SearchSettings,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, str | int]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self.target = target
        self._settings = settings
        self._credentials = credentials
        self._options = list(channel_options)
        self._interceptors = list(interceptors)
        self._channel: grpc.aio.Channel | None = None
        self._stub: embeddings_grpc.EmbeddingsServiceStub | None = None
        self.breaker = CircuitBreaker(
            "embeddings",
            failure_threshold=settings.embed_breaker.failures,
            recovery_s=settings.embed_breaker.recovery_s,
        )
        self._limit = asyncio.Semaphore(settings.embed_concurrency)

    def _stub_for_loop(self) -> embeddings_grpc.EmbeddingsServiceStub:
        if self._stub is None:
            # grpc.aio channels belong to the running event loop: made on first use.
            self._channel = open_channel(
                self.target, self._credentials, self._options, self._interceptors
            )
            self._stub = embeddings_grpc.EmbeddingsServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def info(self, timeout_s: float | None = None) -> embeddings_pb.InfoResponse:
        """The embeddings service's model and limits."""
        deadline = time.monotonic() + (timeout_s or self._settings.embed_timeout_s)
        stub = self._stub_for_loop()

        async def call() -> embeddings_pb.InfoResponse:
            remaining = max(deadline - time.monotonic(), 0.001)
            return await stub.Info(embeddings_pb.InfoRequest(), timeout=remaining)

        response: embeddings_pb.InfoResponse = await self._guarded(call, "Info")
        return response

    async def embed(
        self, texts: Sequence[str], timeout_s: float | None = None, *, bulk: bool = False
    ) -> Embeddings:
        """Embed `texts` (unit-length vectors, in order) within `timeout_s`. `bulk`: a write's
        passages, which the embeddings server queues behind interactive calls and never sheds
        (they wait within the deadline instead)."""
        if not texts:
            raise ValueError("nothing to embed")
        budget = self._settings.embed_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget
        size = self._settings.embed_batch_texts
        chunks = [list(texts[start : start + size]) for start in range(0, len(texts), size)]
        priority = (
            embeddings_pb.EMBED_PRIORITY_BULK if bulk else embeddings_pb.EMBED_PRIORITY_INTERACTIVE
        )
        responses = await asyncio.gather(
            *(self._embed_chunk(chunk, deadline, priority) for chunk in chunks)
        )
        first = responses[0]
        vectors = np.array(
            [embedding.values for response in responses for embedding in response.embeddings],
            dtype=np.float32,
        )
        return Embeddings(vectors, first.model, first.dimensions)

    async def _embed_chunk(
        self, texts: list[str], deadline: float, priority: int
    ) -> embeddings_pb.EmbedResponse:
        stub = self._stub_for_loop()
        request = embeddings_pb.EmbedRequest(
            inputs=texts,
            normalize=True,
            truncate=True,
            priority=priority,  # type: ignore[arg-type]
        )

        async def call() -> embeddings_pb.EmbedResponse:
            remaining = max(deadline - time.monotonic(), 0.001)
            return await stub.Embed(request, timeout=remaining)

        async with self._limit:
            response: embeddings_pb.EmbedResponse = await self._guarded(call, "Embed")
        return response

    async def _guarded(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """One call through the breaker (CircuitBreaker.call); errors translated."""
        try:
            return await self.breaker.call(call, _verdict)
        except CircuitOpenError:
            raise EmbeddingsUnavailableError(
                f"the embeddings service at {self.target} is failing; not calling it for up to"
                f" {self._settings.embed_breaker.recovery_s:g} s (circuit breaker open)"
            ) from None
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc, what) from None

    def _translate(self, exc: grpc.aio.AioRpcError, what: str) -> Exception:
        if is_cancellation(exc):
            # Our own caller leaving arrives as asyncio.CancelledError, not as this: a
            # CANCELLED status came from the path (Envoy or a connection torn down
            # mid-call). The caller must hear UNAVAILABLE, never an unhandled error.
            return EmbeddingsUnavailableError(
                f"the call to the embeddings service at {self.target} was cancelled on"
                f" the way ({what}): {exc.details()}"
            )
        code = exc.code()
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return EmbeddingsTimeoutError(
                f"the embeddings service at {self.target} did not answer {what} in time"
            )
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            return EmbeddingsOverloadedError(
                f"the embeddings service at {self.target} is overloaded ({what}): {exc.details()}"
            )
        if code in _SERVICE_FAILURE_CODES:
            return EmbeddingsUnavailableError(
                f"the embeddings service at {self.target} failed {what}:"
                f" {code.name}: {exc.details()}"
            )
        return EmbeddingsRejectedError(code, exc.details() or code.name)


def _verdict(exc: BaseException) -> Verdict:
    """What a failed Embed/Info call says about the embeddings service: a failure for the
    codes of a service in trouble, an answer for a refused request, nothing for a call that
    was cancelled (on the way or by our caller) or broke here unexpectedly."""
    if isinstance(exc, grpc.aio.AioRpcError) and not is_cancellation(exc):
        return Verdict.FAILURE if exc.code() in _SERVICE_FAILURE_CODES else Verdict.SUCCESS
    return Verdict.NEUTRAL
