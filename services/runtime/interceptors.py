"""Server interceptors, applied in this order (outermost first):

1. AccessLogInterceptor: one JSON log line per RPC with method, status code and duration.
2. ErrorInterceptor: turns any unexpected exception into INTERNAL carrying only an error id.

Later layers (authentication before the log, metrics between log and errors) slot into
`server_interceptors()` in the same order.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

_log = logging.getLogger("ragmesh.rpc")

# A behaviour wrapper gets the RPC's full method name and its original behaviour and returns
# the replacement; `streaming_response` says whether the behaviour is an async generator.
Behaviour = Callable[..., Any]
BehaviourWrapper = Callable[[str, Behaviour, bool], Behaviour]


def wrap_handler(
    handler: grpc.RpcMethodHandler, method: str, wrap: BehaviourWrapper
) -> grpc.RpcMethodHandler:
    """Rebuild a method handler with its behaviour replaced by `wrap(...)`."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap(method, handler.unary_unary, False),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(method, handler.unary_stream, True),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap(method, handler.stream_unary, False),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        wrap(method, handler.stream_stream, True),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Base for interceptors that wrap every method's behaviour."""

    def wrap(self, method: str, behaviour: Behaviour, streaming_response: bool) -> Behaviour:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_handler(handler, handler_call_details.method, self.wrap)


def _status_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    # Some grpc versions report the raw integer here.
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


class AccessLogInterceptor(_WrappingInterceptor):
    """Logs one line per RPC: method, final status code, duration."""

    def wrap(self, method: str, behaviour: Behaviour, streaming_response: bool) -> Behaviour:
        def log(context: grpc.aio.ServicerContext, started: float, cancelled: bool) -> None:
            code = "CANCELLED" if cancelled else _status_name(context)
            _log.info(
                "rpc finished",
                extra={
                    "grpc_method": method,
                    "grpc_code": code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "peer": context.peer(),
                },
            )

        if streaming_response:

            async def logged_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started, cancelled = time.perf_counter(), False
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as exc:
                    cancelled = _is_cancellation(exc)
                    raise
                finally:
                    log(context, started, cancelled)

            return logged_stream

        async def logged_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, cancelled = time.perf_counter(), False
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                cancelled = _is_cancellation(exc)
                raise
            finally:
                log(context, started, cancelled)

        return logged_unary


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError)


class ErrorInterceptor(_WrappingInterceptor):
    """Never lets exception text reach a client.

    An exception that is not a deliberate abort becomes INTERNAL with the message
    ``internal error (error_id=<id>)``; the traceback is logged at ERROR under the same id.
    """

    def wrap(self, method: str, behaviour: Behaviour, streaming_response: bool) -> Behaviour:
        async def fail(context: grpc.aio.ServicerContext, exc: Exception) -> None:
            error_id = uuid.uuid4().hex[:16]
            _log.error(
                "unhandled exception",
                exc_info=exc,
                extra={"error_id": error_id, "grpc_method": method},
            )
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (error_id={error_id})")

        if streaming_response:

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    async for response in behaviour(request, context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await fail(context, exc)

            return guarded_stream

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await fail(context, exc)

        return guarded_unary


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The interceptors of every ragmesh server, outermost first."""
    return [AccessLogInterceptor(), ErrorInterceptor()]
