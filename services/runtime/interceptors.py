"""Server interceptors, applied in this order (outermost first):

0. TracingServerInterceptor (services/runtime/tracing.py): a SERVER span per RPC, child of
   the caller's `traceparent`; every log line of the call carries its trace and span ids.
1. AuthInterceptor (services/runtime/auth.py): refuses calls without a valid API key.
2. AccessLogInterceptor: takes the request id from `x-request-id` (or makes one) for every
   log line of the call and its outgoing calls, and logs one line per RPC with method,
   status code and duration.
3. MetricsInterceptor: grpc_server_started/handled_total and grpc_server_handling_seconds.
4. ErrorInterceptor: a request that does not parse becomes INVALID_ARGUMENT, and any
   unexpected exception INTERNAL carrying only an error id.

"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from services.runtime import metrics
from services.runtime.context import REQUEST_ID_HEADER, new_request_id, request_id
from services.runtime.errors import RpcFailure
from services.runtime.tracing import TracingServerInterceptor

_log = logging.getLogger("ragmesh.rpc")
HEALTH_PREFIX = "/grpc.health.v1.Health/"

# A behaviour wrapper gets the RPC's full method name and its original behaviour and returns
# the replacement; the flag says whether the behaviour is an async generator.
Behaviour = Callable[..., Any]
BehaviourWrapper = Callable[[str, Behaviour, bool], Behaviour]


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    method: str,
    wrap: BehaviourWrapper,
    wrap_deserializer: Callable[[Any], Any] = lambda deserializer: deserializer,
) -> grpc.RpcMethodHandler:
    """Rebuild a method handler with its behaviour replaced by `wrap(...)`."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attribute, make_handler in kinds:
        behaviour = getattr(handler, attribute)
        if behaviour is not None:
            # A streaming handler either yields (an async generator) or awaits
            # `context.write` (a coroutine, like the health service's Watch); the wrapper
            # must be of the same kind.
            return make_handler(
                wrap(method, behaviour, inspect.isasyncgenfunction(behaviour)),
                request_deserializer=wrap_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
    raise ValueError(f"handler for {method} has no behaviour")


class _WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Base for interceptors that wrap every method's behaviour."""

    def wrap(self, method: str, behaviour: Behaviour, yields: bool) -> Behaviour:
        raise NotImplementedError

    def wrap_deserializer(self, deserializer: Any) -> Any:
        return deserializer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_handler(handler, handler_call_details.method, self.wrap, self.wrap_deserializer)


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

    def wrap(self, method: str, behaviour: Behaviour, yields: bool) -> Behaviour:
        # Health probes arrive every second from Envoy and `up`; keep them out of INFO.
        level = logging.DEBUG if method.startswith(HEALTH_PREFIX) else logging.INFO

        def log(context: grpc.aio.ServicerContext, started: float, cancelled: bool) -> None:
            code = "CANCELLED" if cancelled else _status_name(context)
            _log.log(
                level,
                "rpc finished",
                extra={
                    "grpc_method": method,
                    "grpc_code": code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "peer": context.peer(),
                },
            )

        if yields:

            async def logged_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                _adopt_request_id(context)
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
            _adopt_request_id(context)
            started, cancelled = time.perf_counter(), False
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                cancelled = _is_cancellation(exc)
                raise
            finally:
                log(context, started, cancelled)

        return logged_unary


def _adopt_request_id(context: grpc.aio.ServicerContext) -> None:
    """This call's request id: the caller's (Envoy sets one on every request) or a new one.
    A context variable, so log lines and outgoing calls of this task carry it."""
    incoming = dict(context.invocation_metadata() or ()).get(REQUEST_ID_HEADER)
    request_id.set(str(incoming) if incoming else new_request_id())


def _split_method(method: str) -> tuple[str, str]:
    """ "/pkg.Service/Method" → ("pkg.Service", "Method")."""
    _, service, name = method.split("/", 2) if method.count("/") >= 2 else ("", "", method)
    return service, name


class MetricsInterceptor(_WrappingInterceptor):
    """Counts and times every RPC by service, method and final status code."""

    def wrap(self, method: str, behaviour: Behaviour, yields: bool) -> Behaviour:
        service, name = _split_method(method)
        labels = {
            "grpc_type": "server_stream" if yields else "unary",
            "grpc_service": service,
            "grpc_method": name,
        }

        def finish(context: grpc.aio.ServicerContext, started: float, cancelled: bool) -> None:
            code = "CANCELLED" if cancelled else _status_name(context)
            metrics.GRPC_HANDLED.labels(**labels, grpc_code=code).inc()
            metrics.GRPC_HANDLING_SECONDS.labels(**labels).observe(time.perf_counter() - started)

        if yields:

            async def measured_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                metrics.GRPC_STARTED.labels(**labels).inc()
                started, cancelled = time.perf_counter(), False
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as exc:
                    cancelled = _is_cancellation(exc)
                    raise
                finally:
                    finish(context, started, cancelled)

            return measured_stream

        async def measured_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metrics.GRPC_STARTED.labels(**labels).inc()
            started, cancelled = time.perf_counter(), False
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                cancelled = _is_cancellation(exc)
                raise
            finally:
                finish(context, started, cancelled)

        return measured_unary


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError)


@dataclass(frozen=True)
class UndecodableRequest:
    """Stands in for a request message that failed to parse (e.g. invalid UTF-8)."""

    problem: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return UndecodableRequest(str(exc))

    return parse


class ErrorInterceptor(_WrappingInterceptor):
    """Never lets exception text reach a client.

    A request that does not parse becomes INVALID_ARGUMENT; an RpcFailure becomes its own
    code and message. Any other exception that is not a
    deliberate abort becomes INTERNAL with the message ``internal error (error_id=<id>)``;
    the traceback is logged at ERROR under the same id.
    """

    def wrap_deserializer(self, deserializer: Any) -> Any:
        return _tolerant(deserializer)

    def wrap(self, method: str, behaviour: Behaviour, yields: bool) -> Behaviour:
        async def fail(context: grpc.aio.ServicerContext, exc: Exception) -> None:
            error_id = uuid.uuid4().hex[:16]
            _log.error(
                "unhandled exception",
                exc_info=exc,
                extra={"error_id": error_id, "grpc_method": method},
            )
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (error_id={error_id})")

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            """The request, or its checked message stream; aborts on one that did not parse."""
            if isinstance(request, UndecodableRequest):
                await _reject_undecodable(request, context)
            if hasattr(request, "__aiter__"):
                return _checked_stream(request, context)
            return request

        if yields:

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    async for response in behaviour(await checked(request, context), context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except RpcFailure as failure:
                    await context.abort(failure.code, failure.details)
                except Exception as exc:
                    await fail(context, exc)

            return guarded_stream

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behaviour(await checked(request, context), context)
            except grpc.aio.AbortError:
                raise
            except RpcFailure as failure:
                await context.abort(failure.code, failure.details)
            except Exception as exc:
                await fail(context, exc)

        return guarded_unary


async def _reject_undecodable(
    request: UndecodableRequest, context: grpc.aio.ServicerContext
) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"the request message does not parse: {request.problem}"
    )


async def _checked_stream(
    messages: AsyncIterator[Any], context: grpc.aio.ServicerContext
) -> AsyncIterator[Any]:
    async for message in messages:
        if isinstance(message, UndecodableRequest):
            await _reject_undecodable(message, context)
        yield message


def server_interceptors(
    authentication: grpc.aio.ServerInterceptor | None,
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors of every ragmesh server, outermost first."""
    first = [authentication] if authentication is not None else []
    return [
        TracingServerInterceptor(),
        *first,
        AccessLogInterceptor(),
        MetricsInterceptor(),
        ErrorInterceptor(),
    ]
