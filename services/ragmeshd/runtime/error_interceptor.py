"""The error interceptor: domain code raises a typed failure (runtime/errors.py) and a client sees
its status; anything unexpected becomes INTERNAL with only an error id (details in the log
under that id). Undecodable requests are INVALID_ARGUMENT, a stream whose deadline passes ends
with DEADLINE_EXCEEDED before Envoy can reset it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from ragmeshd.runtime.errors import RpcFailure
from ragmeshd.runtime.handlers import Behaviour, WrappingInterceptor

_log = logging.getLogger("ragmesh.rpc")


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


async def _abort(context: grpc.aio.ServicerContext, failure: RpcFailure) -> None:
    if _client_left(context):
        raise asyncio.CancelledError  # the client left: nobody to tell
    trailers: tuple[tuple[str, str], ...] = ()
    if failure.retry_after_s is not None:
        pushback_ms = max(0, round(failure.retry_after_s * 1000))
        trailers = (("grpc-retry-pushback-ms", str(pushback_ms)),)
    await context.abort(failure.code, status_message(failure.details), trailers)


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
