"""Polling a server's grpc.health.v1 status."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


async def check_health(
    target: str,
    service: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
    timeout_s: float = 1.0,
) -> int:
    """The service's health status, or UNKNOWN when the server cannot be reached."""
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    channel = (
        grpc.aio.secure_channel(target, credentials, options=options)
        if credentials
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return int(health_pb2.HealthCheckResponse.UNKNOWN)
        return int(response.status)
