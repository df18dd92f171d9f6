"""Rebuilding a gRPC method handler with its behaviour wrapped: the one mechanism every
server interceptor (runtime/interceptors.py, runtime/tracing.py) uses to run code around an
RPC of any of the four kinds."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

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


HEALTH_PREFIX = "/grpc.health.v1.Health/"


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
