"""Load shedding: a server takes at most `limit` calls at once and refuses the rest at once.

A call past the limit gets RESOURCE_EXHAUSTED before its handler runs, so an overloaded server
answers the excess in microseconds instead of queueing it until deadlines pass, and Envoy does
not retry it (ragmeshd/envoy/limits.py). Health checks are never refused: an overloaded
replica is busy, not broken, and must stay in Envoy's rotation.
"""

from __future__ import annotations

from typing import Any

import grpc

from ragmeshd.runtime.handlers import HEALTH_PREFIX, Behaviour, WrappingInterceptor


class AdmissionInterceptor(WrappingInterceptor):
    """Counts the calls in progress (a stream until it ends) and refuses those past `limit`."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the concurrency limit must be at least 1")
        self.limit = limit
        self.in_flight = 0

    def _refusal(self) -> str:
        return (
            f"the server is at its limit of {self.limit} concurrent calls"
            " (server.max_concurrent_rpcs); retry later with backoff"
        )

    def wrap(self, method: str, behaviour: Behaviour, yields: bool) -> Behaviour:
        if method.startswith(HEALTH_PREFIX):
            return behaviour

        if yields:

            async def admitted_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if self.in_flight >= self.limit:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._refusal())
                self.in_flight += 1
                try:
                    async for response in behaviour(request, context):
                        yield response
                finally:
                    self.in_flight -= 1

            return admitted_stream

        async def admitted_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.in_flight >= self.limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._refusal())
            self.in_flight += 1
            try:
                return await behaviour(request, context)
            finally:
                self.in_flight -= 1

        return admitted_unary
