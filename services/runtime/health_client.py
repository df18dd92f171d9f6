"""Polling a server's grpc.health.v1 status."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.channels import open_channel

SERVING = health_pb2.HealthCheckResponse.SERVING


async def check_health(
    target: str,
    service: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    timeout_s: float = 1.0,
) -> int:
    """The service's health status, or UNKNOWN when the server cannot be reached."""
    async with open_channel(target, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return int(health_pb2.HealthCheckResponse.UNKNOWN)
        return int(response.status)
