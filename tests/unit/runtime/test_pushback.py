"""A server's RpcFailure with retry_after_s reaches the client as the
grpc-retry-pushback-ms trailer, which the clients' retry helper reads."""

from __future__ import annotations

import grpc

from ragmeshd.runtime.client_retries import pushback_s
from ragmeshd.runtime.errors import RpcFailure
from ragmeshd.runtime.interceptors import server_interceptors

SERVICE = "test.v1.PushbackService"


async def busy(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue too long", retry_after_s=0.25)


async def plain(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RpcFailure(grpc.StatusCode.UNAVAILABLE, "starting")


async def test_the_pushback_trailer_reaches_the_client() -> None:
    server = grpc.aio.server(interceptors=server_interceptors(None))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Busy": grpc.unary_unary_rpc_method_handler(busy),
                    "Plain": grpc.unary_unary_rpc_method_handler(plain),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            errors = {}
            for method in ("Busy", "Plain"):
                try:
                    await channel.unary_unary(f"/{SERVICE}/{method}")(b"x", timeout=10)
                except grpc.aio.AioRpcError as error:
                    errors[method] = error
    finally:
        await server.stop(None)
    assert errors["Busy"].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert errors["Busy"].details() == "queue too long"
    assert pushback_s(errors["Busy"].trailing_metadata()) == 0.25
    assert pushback_s(errors["Plain"].trailing_metadata()) is None
