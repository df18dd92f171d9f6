"""Load shedding by the server's concurrency limit, on a real in-process grpc.aio server."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ragmeshd.runtime.admission import AdmissionInterceptor
from ragmeshd.runtime.interceptors import server_interceptors
from tests.helpers import eventually_async

SERVICE = "test.v1.SlowService"


async def test_calls_past_the_limit_are_refused_at_once_and_health_never() -> None:
    release = asyncio.Event()

    async def hold(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await release.wait()
        return request

    async def hold_stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        yield b"first"
        await release.wait()

    admission = AdmissionInterceptor(limit=2)
    server = grpc.aio.server(interceptors=server_interceptors(None, admission))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Hold": grpc.unary_unary_rpc_method_handler(hold),
                    "HoldStream": grpc.unary_stream_rpc_method_handler(hold_stream),
                },
            ),
        )
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary(f"/{SERVICE}/Hold")
            stream = channel.unary_stream(f"/{SERVICE}/HoldStream")
            held = asyncio.ensure_future(unary(b"a", timeout=10))
            open_stream = stream(b"s", timeout=10)
            assert await open_stream.read() == b"first"  # a stream holds its slot until it ends
            await eventually_async(
                lambda: admission.in_flight == 2, 5, "both calls admitted", interval_s=0.01
            )

            started = time.perf_counter()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await unary(b"b", timeout=10)
            assert time.perf_counter() - started < 1.0
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit of 2 concurrent calls" in (refused.value.details() or "")

            check = health_pb2_grpc.HealthStub(channel).Check
            assert (await check(health_pb2.HealthCheckRequest(), timeout=5)).status == (
                health_pb2.HealthCheckResponse.SERVING
            )

            release.set()
            assert await held == b"a"
            assert await open_stream.read() == grpc.aio.EOF
            assert admission.in_flight == 0
            assert await unary(b"c", timeout=10) == b"c"  # room again
    finally:
        await server.stop(None)


def test_the_limit_must_admit_something() -> None:
    with pytest.raises(ValueError):
        AdmissionInterceptor(limit=0)
