"""Wiring of the OpenAI-compatible adapter process: gRPC channels to the mesh, the Starlette
app, and uvicorn serving it over mutual TLS (only CA-signed callers, i.e. Envoy, get in)."""

from __future__ import annotations

import logging
import ssl

import uvicorn

from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from services.config import Settings
from services.openai_compat.app import Backends, create_app
from services.runtime.channels import open_channel
from services.runtime.tls import caller_credentials_for, existing, mesh_certificates

# The name of this service's certificates (openai.pem, openai-client.pem) and Envoy cluster.
SERVICE = "openai"
# Uvicorn waits this long for open requests (streams included) once asked to stop.
SHUTDOWN_GRACE_S = 10

_log = logging.getLogger("ragmesh.openai")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def uvicorn_config(settings: Settings, backends: Backends) -> uvicorn.Config:
    host, port = _split(settings.openai.listen)
    tls: dict[str, object] = {}
    if settings.mesh.tls:
        certs = mesh_certificates(settings)
        identity = existing(certs.services[SERVICE], f"{SERVICE} server")
        tls = {
            "ssl_certfile": str(identity.cert),
            "ssl_keyfile": str(identity.key),
            "ssl_ca_certs": str(certs.ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    return uvicorn.Config(
        create_app(backends),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        **tls,  # type: ignore[arg-type]
    )


async def serve_openai(settings: Settings) -> int:
    credentials = caller_credentials_for(settings, SERVICE)
    embeddings_channel = open_channel(settings.openai.embeddings_target, credentials)
    coordinator_channel = open_channel(settings.openai.coordinator_target, credentials)
    backends = Backends(
        embeddings=embeddings_grpc.EmbeddingsServiceStub(embeddings_channel),
        coordinator=coordinator_grpc.CoordinatorServiceStub(coordinator_channel),
        embed_timeout_s=settings.openai.embed_timeout_s,
        ask_timeout_s=settings.openai.ask_timeout_s,
    )
    server = uvicorn.Server(uvicorn_config(settings, backends))
    _log.info("serving", extra={"listen": settings.openai.listen, "tls": settings.mesh.tls})
    try:
        await server.serve()
    finally:
        await embeddings_channel.close()
        await coordinator_channel.close()
    _log.info("stopped")
    return 0
