"""Server interceptors, applied in this order (outermost first):

0. TracingServerInterceptor (services/runtime/tracing.py): a SERVER span per RPC, child of
   the caller's `traceparent`; every log line of the call carries its trace and span ids.
1. AuthInterceptor (services/runtime/auth.py): refuses calls without a valid API key.
2. AccessLogInterceptor: takes the request id from `x-request-id` (or makes one) for every
   log line of the call and its outgoing calls, and logs one line per RPC with method,
   status code, duration and the API key's id.
3. MetricsInterceptor: grpc_server_started/handled_total and grpc_server_handling_seconds.
4. AdmissionInterceptor (services/runtime/admission.py): refuses calls past the server's
   concurrency limit with RESOURCE_EXHAUSTED (logged and counted by the two above).
5. ErrorInterceptor: a request that does not parse becomes INVALID_ARGUMENT, and any
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
from services.runtime.keystore import presented_key, presented_key_id
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


class WrappingInterceptor(grpc.aio.ServerInterceptor):
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


@dataclass(frozen=True)
class ObservedCall:
    """What an observing interceptor knows of an RPC: its full method and its kind."""

    method: str
    kind: str  # "unary" or "streaming" (the handler yields responses)

    @property
    def metric_labels(self) -> dict[str, str]:
        """ "/pkg.Service/Method" → the grpc_type, grpc_service and grpc_method labels."""
        _, service, name = (
            self.method.split("/", 2) if self.method.count("/") >= 2 else ("", "", self.method)
        )
        return {"grpc_type": self.kind, "grpc_service": service, "grpc_method": name}


class _ObservingInterceptor(WrappingInterceptor):
    """Base for interceptors that act when an RPC starts and when it ends (with its final
    status code and duration), whatever the kind of handler."""

    def started(self, call: ObservedCall, context: grpc.aio.ServicerContext) -> Any:
        """Called as the RPC's handler starts; what it returns is handed to `finished`.

        Whatever `finished` needs from the call's transport (its peer, its metadata) is read
        here. `finished` may run after the RPC is over: when a client leaves a stream, gRPC
        drops the handler's async generator and the event loop closes it later, and the
        call's core object may be gone by then; context.peer() at that point crashed the
        server (SIGSEGV, found by the fuzz suite with short deadlines on server streams).
        """
        return None

    def finished(self, call: ObservedCall, facts: Any, seconds: float, code: str) -> None:
        """Called once the handler has returned or raised, with what `started` returned."""

    def wrap(self, method: str, behaviour: Behaviour, yields: bool) -> Behaviour:
        call = ObservedCall(method, "streaming" if yields else "unary")

        def finish(
            context: grpc.aio.ServicerContext, facts: Any, started: float, cancelled: bool
        ) -> None:
            # context.code() is the status the handler set, kept in Python: safe to read late.
            code = "CANCELLED" if cancelled else _status_name(context)
            self.finished(call, facts, time.perf_counter() - started, code)

        if yields:

            async def observed_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                facts = self.started(call, context)
                started, cancelled = time.perf_counter(), False
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as exc:
                    cancelled = _is_cancellation(exc)
                    raise
                finally:
                    finish(context, facts, started, cancelled)

            return observed_stream

        async def observed_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            facts = self.started(call, context)
            started, cancelled = time.perf_counter(), False
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                cancelled = _is_cancellation(exc)
                raise
            finally:
                finish(context, facts, started, cancelled)

        return observed_unary


class AccessLogInterceptor(_ObservingInterceptor):
    """Adopts the call's request id and logs one line per RPC: method, code, duration."""

    def started(self, call: ObservedCall, context: grpc.aio.ServicerContext) -> Any:
        # A context variable, so log lines and outgoing calls of this task carry it: the
        # caller's id (Envoy sets one on every request), or a new one.
        metadata = context.invocation_metadata()
        incoming = dict(metadata or ()).get(REQUEST_ID_HEADER)
        request_id.set(str(incoming) if incoming else new_request_id())
        # The key's id (never the key): which credential made the call.
        return {"peer": context.peer(), "key_id": presented_key_id(presented_key(metadata))}

    def finished(self, call: ObservedCall, facts: Any, seconds: float, code: str) -> None:
        # Health probes arrive every second from Envoy and `up`; keep them out of INFO.
        level = logging.DEBUG if call.method.startswith(HEALTH_PREFIX) else logging.INFO
        _log.log(
            level,
            "rpc finished",
            extra={
                "grpc_method": call.method,
                "grpc_code": code,
                "duration_ms": round(seconds * 1000, 3),
                **facts,
            },
        )


class MetricsInterceptor(_ObservingInterceptor):
    """Counts and times every RPC by service, method and final status code."""

    def started(self, call: ObservedCall, context: grpc.aio.ServicerContext) -> Any:
        metrics.GRPC_STARTED.labels(**call.metric_labels).inc()
        return None

    def finished(self, call: ObservedCall, facts: Any, seconds: float, code: str) -> None:
        metrics.GRPC_HANDLED.labels(**call.metric_labels, grpc_code=code).inc()
        metrics.GRPC_HANDLING_SECONDS.labels(**call.metric_labels).observe(seconds)


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


class ErrorInterceptor(WrappingInterceptor):
    """Never lets exception text reach a client.

    A request that does not parse becomes INVALID_ARGUMENT; an RpcFailure becomes its own
    code and message (cut to MAX_STATUS_MESSAGE_CHARS: a message that quotes a huge input
    would not fit in a header, and Envoy would report the reply as a protocol error). Any
    other exception that is not a deliberate abort becomes INTERNAL with the message
    ``internal error (error_id=<id>)``; the traceback is logged at ERROR under the same id.
    When the client has already left (cancelled, or its deadline passed) nothing is sent
    and nothing is logged as an error: code that turned the cancellation into another
    exception is not a failure of the server.
    """

    def wrap_deserializer(self, deserializer: Any) -> Any:
        return _tolerant(deserializer)

    def wrap(self, method: str, behaviour: Behaviour, yields: bool) -> Behaviour:
        async def fail(context: grpc.aio.ServicerContext, exc: Exception) -> None:
            if _client_left(context):
                _log.info(
                    "call ended after its client left",
                    extra={"grpc_method": method, "error": type(exc).__name__},
                )
                raise asyncio.CancelledError from exc
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
                    responses = behaviour(await checked(request, context), context)
                    async for response in _within_deadline(responses, context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except RpcFailure as failure:
                    await _abort(context, failure)
                except Exception as exc:
                    await fail(context, exc)

            return guarded_stream

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behaviour(await checked(request, context), context)
            except grpc.aio.AbortError:
                raise
            except RpcFailure as failure:
                await _abort(context, failure)
            except Exception as exc:
                await fail(context, exc)

        return guarded_unary


# A server stream ends itself with DEADLINE_EXCEEDED this long before its deadline. Envoy
# times the same deadline (it sent it to the server as grpc-timeout), and when its timer fires
# first it can only reset a stream whose answers have started, which the caller would see as
# INTERNAL ("RST_STREAM error code 2"); ending first, the server's status reaches the caller.
STREAM_DEADLINE_MARGIN_S = 0.1
_STREAM_DEADLINE_PASSED = "the call's deadline passed before the stream was complete"


async def _within_deadline(
    responses: AsyncIterator[Any], context: grpc.aio.ServicerContext
) -> AsyncIterator[Any]:
    """`responses`, cut short with DEADLINE_EXCEEDED STREAM_DEADLINE_MARGIN_S before the
    call's deadline. Only the wait for the next answer is timed (in this task, so context
    variables and spans inside the handler stay intact), not the write of one."""
    remaining = context.time_remaining()
    if remaining is None:
        async for response in responses:
            yield response
        return
    if remaining <= STREAM_DEADLINE_MARGIN_S:
        # Too little time to answer and still end first: say so before any answer starts.
        raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, _STREAM_DEADLINE_PASSED)
    deadline = asyncio.get_running_loop().time() + remaining - STREAM_DEADLINE_MARGIN_S
    iterator = aiter(responses)
    while True:
        timer = asyncio.timeout_at(deadline)
        try:
            async with timer:
                response = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            if not timer.expired():
                raise  # the handler's own timeout, not the call's deadline
            raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, _STREAM_DEADLINE_PASSED) from None
        yield response


# The longest status message sent: gRPC carries it in a header (grpc-message), and a reply
# whose headers pass Envoy's limit (60 KiB) reaches the client as UNAVAILABLE.
MAX_STATUS_MESSAGE_CHARS = 1000


def status_message(details: str) -> str:
    """`details`, cut to MAX_STATUS_MESSAGE_CHARS with a note saying so."""
    if len(details) <= MAX_STATUS_MESSAGE_CHARS:
        return details
    return f"{details[: MAX_STATUS_MESSAGE_CHARS - 40]}... (cut from {len(details)} characters)"


def _client_left(context: grpc.aio.ServicerContext) -> bool:
    """The client cancelled the call or its deadline has passed: no answer reaches it."""
    remaining = context.time_remaining()
    return context.cancelled() or (remaining is not None and remaining <= 0)


async def _abort(context: grpc.aio.ServicerContext, failure: RpcFailure) -> None:
    if _client_left(context):
        raise asyncio.CancelledError  # the client left: nobody to tell
    await context.abort(failure.code, status_message(failure.details))


async def _reject_undecodable(
    request: UndecodableRequest, context: grpc.aio.ServicerContext
) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        status_message(f"the request message does not parse: {request.problem}"),
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
    admission: grpc.aio.ServerInterceptor | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors of every ragmesh server, outermost first."""
    first = [authentication] if authentication is not None else []
    shedding = [admission] if admission is not None else []
    return [
        TracingServerInterceptor(),
        *first,
        AccessLogInterceptor(),
        MetricsInterceptor(),
        *shedding,
        ErrorInterceptor(),
    ]
