"""Wiring of the OpenAI-compatible adapter process: gRPC channels to the mesh, the Starlette
app, and uvicorn serving it over mutual TLS (only CA-signed callers, i.e. Envoy, get in).
Its certificate is the mesh's (STATE_DIR/certs, made by `ragmesh up`) or a mounted
cert-manager Secret (RAGMESH_MOUNTED_CERTS__SERVER_DIR, Kubernetes), re-read when renewed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path

import uvicorn

from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmeshd import defaults
from ragmeshd.openai_compat.app import Backends, create_app
from ragmeshd.openai_compat.gate import BodyLimit, EnvoyOnlyProtocol
from ragmeshd.openai_compat.lifecycle import (
    DrainingServer,
    Health,
    health_server,
    reload_certificate,
)
from ragmeshd.runtime.channels import open_channel
from ragmeshd.runtime.tls import caller_credentials_for, existing, mesh_certificates
from ragmeshd.settings import Settings

# The name of this service's certificates (openai.pem, openai-client.pem) and Envoy cluster.
SERVICE = "openai"
# Uvicorn waits this long for open requests (streams included) once asked to stop.
SHUTDOWN_GRACE_S = 10

_log = logging.getLogger("ragmesh.openai")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def server_files(settings: Settings) -> tuple[Path, Path, Path]:
    """The adapter's certificate, key and trusted CA."""
    mounted = settings.mounted_certs.server_dir
    if mounted:
        directory = Path(mounted)  # a cert-manager Secret's layout
        return directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    certs = mesh_certificates(settings)
    identity = existing(certs.services[SERVICE], f"{SERVICE} server")
    return identity.cert, identity.key, certs.ca


def uvicorn_config(
    settings: Settings, backends: Backends, health: Health | None = None
) -> uvicorn.Config:
    host, port = _split(settings.openai.listen)
    tls: dict[str, object] = {}
    if settings.mesh.tls:
        cert, key, ca = server_files(settings)
        tls = {
            "ssl_certfile": str(cert),
            "ssl_keyfile": str(key),
            "ssl_ca_certs": str(ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    if settings.mesh.tls:
        # Only Envoy's client certificate gets in, as on the gRPC replicas.
        tls["http"] = EnvoyOnlyProtocol
    return uvicorn.Config(
        BodyLimit(
            create_app(backends, health.readiness if health is not None else None),
            settings.openai.max_body_bytes,
        ),
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
    health = Health()
    config = uvicorn_config(settings, backends, health)
    config.load()
    server = DrainingServer(config, health, drain_s=settings.server.shutdown_drain_s)
    reloads = None
    if config.ssl is not None:
        files = server_files(settings)
        interval_s = defaults.OPENAI_CERT_RELOAD_INTERVAL_S
        reloads = asyncio.create_task(reload_certificate(config.ssl, *files, interval_s))
    probes = health_server(health, settings.openai.health_listen)
    probes_task = asyncio.create_task(probes.serve()) if probes is not None else None
    _log.info("serving", extra={"listen": settings.openai.listen, "tls": settings.mesh.tls})
    try:
        await server.serve()
    finally:
        if reloads is not None:
            reloads.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reloads
        if probes is not None and probes_task is not None:
            probes.should_exit = True
            await probes_task
        await embeddings_channel.close()
        await coordinator_channel.close()
    _log.info("stopped")
    return 0
