"""Polling a server's grpc.health.v1 status."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragmeshd.runtime.channels import open_channel
from ragmeshd.runtime.tls import replica_channel_options

SERVING = health_pb2.HealthCheckResponse.SERVING


async def check_health(
    target: str,
    service: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    server_name_of: str | None = None,
    timeout_s: float = 1.0,
) -> int:
    """The service's health status, or UNKNOWN when the server cannot be reached.

    With `credentials`, `server_name_of` names the mesh service (e.g. "search") whose DNS name
    the replica's certificate must carry (ragmeshd/runtime/tls.py, replica_channel_options).
    """
    options = replica_channel_options(server_name_of) if server_name_of else []
    async with open_channel(target, credentials, options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return int(health_pb2.HealthCheckResponse.UNKNOWN)
        return int(response.status)
