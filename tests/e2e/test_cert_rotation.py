"""Renewing every certificate of a running mesh under traffic (`ragmesh certs renew --all`):
no call fails, and Envoy (through SDS file watching) and every server (through dynamic
credentials) serve the new certificates on new connections, without a restart."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from ragmeshd.envoy.admin import admin_get
from ragmeshd.pki.renewal import serial_of
from ragmeshd.runtime.tls import replica_server_name
from tests.helpers import REPO_ROOT, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

# Traffic before, during and after the renewal; then this long for every new certificate to
# be served (Envoy reacts to the file move at once; a server at its next handshake).
TRAFFIC_BEFORE_S = 1.0
TRAFFIC_AFTER_S = 2.0
SERVED_WITHIN_S = 15.0
COLLECTION = "rotation"


def _served_serial(endpoint: str, certs: Path, client: str, server_name: str) -> int:
    """The serial of the certificate a server presents on a new TLS connection, verified to
    name `server_name`."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / f"{client}.pem"), str(certs / f"{client}-key.pem"))
    context.set_alpn_protocols(["h2"])
    host, port = endpoint.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def _upstream_serials(admin: str) -> set[int]:
    """The serials of the certificates Envoy has loaded (its admin /certs)."""
    certs = json.loads(await admin_get(admin, "/certs"))["certificates"]
    return {
        int(chain["serial_number"], 16) for entry in certs for chain in entry.get("cert_chain", [])
    }


async def _keep_calling(mesh: Mesh, stop: asyncio.Event, counts: dict[str, int]) -> None:
    async def reuse_channel() -> None:
        async with mesh.channel() as channel:
            embed = embeddings_grpc.EmbeddingsServiceStub(channel)
            search = search_grpc.SearchServiceStub(channel)
            while not stop.is_set():
                await embed.Embed(embeddings_pb.EmbedRequest(inputs=["rotate"]), timeout=30)
                # Search embeds the query through Envoy's internal listener.
                await search.Search(
                    search_pb.SearchRequest(collection=COLLECTION, query="rotate"), timeout=30
                )
                counts["reused"] += 2

    async def new_channel_each_call() -> None:
        # A new TLS connection per call: handshakes keep happening while files change.
        while not stop.is_set():
            async with mesh.channel() as channel:
                await embeddings_grpc.EmbeddingsServiceStub(channel).Embed(
                    embeddings_pb.EmbedRequest(inputs=["rotate"]), timeout=30
                )
            counts["new"] += 1

    await asyncio.gather(reuse_channel(), reuse_channel(), new_channel_each_call())


async def test_renewing_every_certificate_under_traffic_drops_no_call(mesh: Mesh) -> None:
    certs = mesh.certs
    async with mesh.channel() as channel:
        search = search_grpc.SearchServiceStub(channel)
        try:
            await search.CreateCollection(search_pb.CreateCollectionRequest(name=COLLECTION))
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    replicas = mesh.state.replicas
    before = {
        r.name: _served_serial(r.target, certs, "envoy-upstream", replica_server_name(r.service))
        for r in replicas
    }
    before["envoy"] = _served_serial(mesh.endpoint, certs, "clients/client", "localhost")

    stop, counts = asyncio.Event(), {"reused": 0, "new": 0}
    traffic = asyncio.ensure_future(_keep_calling(mesh, stop, counts))
    await asyncio.sleep(TRAFFIC_BEFORE_S)
    renewed = await asyncio.to_thread(
        subprocess.run,
        ragmesh_command("certs", "renew", "--all"),
        env={**os.environ, **mesh.env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert renewed.returncode == 0, renewed.stderr

    expected = {r.name: serial_of(certs / f"{r.service}.pem") for r in replicas}
    expected["envoy"] = serial_of(certs / "envoy.pem")
    upstream = serial_of(certs / "envoy-upstream.pem")
    deadline = time.monotonic() + SERVED_WITHIN_S
    while True:
        served = {
            r.name: _served_serial(
                r.target, certs, "envoy-upstream", replica_server_name(r.service)
            )
            for r in replicas
        }
        served["envoy"] = _served_serial(mesh.endpoint, certs, "clients/client", "localhost")
        loaded = await _upstream_serials(mesh.admin)
        if (served == expected and upstream in loaded) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(TRAFFIC_AFTER_S)
    stop.set()
    await traffic  # raises the first failed call, if any

    assert served == expected, f"still served: {served}, renewed: {expected}"
    assert all(expected[name] != before[name] for name in expected)
    assert upstream in loaded, "Envoy did not load its renewed client certificate"
    assert counts["reused"] > 0 and counts["new"] > 0, counts
