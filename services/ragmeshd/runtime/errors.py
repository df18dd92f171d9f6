"""Expected failures: raised by handlers, turned into a gRPC status by ErrorInterceptor.

Raising (rather than calling `context.abort`) works from any task a handler spawns, and keeps
domain code free of the servicer context.
"""

from __future__ import annotations

import grpc


class RpcFailure(Exception):
    """A failure the client should see with this code and message."""

    def __init__(
        self, code: grpc.StatusCode, details: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        # Sent as the `grpc-retry-pushback-ms` trailer (gRFC A6): how long a client should
        # wait before trying again (ragmeshd/runtime/client_retries.py honours it).
        self.retry_after_s = retry_after_s


def invalid_argument(details: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, details)


def not_found(details: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.NOT_FOUND, details)


def unavailable(details: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.UNAVAILABLE, details)
