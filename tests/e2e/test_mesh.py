"""The whole mesh through Envoy with mutual TLS: real Envoy, real servers, real database."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
import psutil
import pytest

from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from services.mesh.certs import ensure_certificates
from services.mesh.envoy_admin import admin_get
from services.mesh.layout import grpcurl_path
from services.runtime.tls import channel_credentials
from tests.e2e.conftest import Mesh
from tests.helpers import REPO_ROOT, ragmesh_command

pytestmark = pytest.mark.e2e

EMBEDDINGS = "ragmesh.embeddings.v1.EmbeddingsService"
SEARCH = "ragmesh.search.v1.SearchService"


def grpcurl(mesh: Mesh, *args: str, data: dict | None = None) -> subprocess.CompletedProcess[str]:
    command = [grpcurl_path(), *mesh.tls_flags()]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [mesh.endpoint, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_grpcurl_lists_describes_and_calls_through_envoy(mesh: Mesh) -> None:
    listed = grpcurl(mesh, "list")
    assert listed.returncode == 0, listed.stderr
    assert {EMBEDDINGS, SEARCH} <= set(listed.stdout.split())

    described = grpcurl(mesh, "describe", SEARCH)
    assert described.returncode == 0, described.stderr
    assert "rpc Search" in described.stdout

    embedded = grpcurl(mesh, f"{EMBEDDINGS}/Embed", data={"inputs": ["through envoy"]})
    assert embedded.returncode == 0, embedded.stderr
    assert len(json.loads(embedded.stdout)["embeddings"][0]["values"]) == 384

    created = grpcurl(mesh, f"{SEARCH}/CreateCollection", data={"name": "e2e"})
    assert created.returncode == 0, created.stderr
    documents = [
        {"id": "envoy", "text": "Envoy retries idempotent gRPC calls on another replica."},
        {"id": "pg", "text": "pgvector keeps embeddings inside PostgreSQL tables."},
    ]
    upserted = grpcurl(
        mesh, f"{SEARCH}/UpsertDocuments", data={"collection": "e2e", "documents": documents}
    )
    assert upserted.returncode == 0, upserted.stderr
    found = grpcurl(
        mesh,
        f"{SEARCH}/Search",
        data={"collection": "e2e", "query": "where are vectors stored?", "top_k": 1},
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["hits"][0]["documentId"] == "pg"


async def test_tls_handshake_needs_a_certificate_from_the_mesh_ca(
    mesh: Mesh, tmp_path_factory: pytest.TempPathFactory
) -> None:
    request = embeddings_pb.InfoRequest()
    no_certificate = grpc.ssl_channel_credentials((mesh.certs / "ca.pem").read_bytes())
    other = ensure_certificates(tmp_path_factory.mktemp("other-ca"))
    other_ca = channel_credentials(mesh.certs / "ca.pem", other.client.cert, other.client.key)
    for credentials in (no_certificate, other_ca):
        async with grpc.aio.secure_channel(mesh.endpoint, credentials) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await embeddings_grpc.EmbeddingsServiceStub(channel).Info(request, timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_services_refuse_direct_plaintext_calls(mesh: Mesh) -> None:
    for replica in mesh.state.replicas:
        async with grpc.aio.insecure_channel(replica.target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await embeddings_grpc.EmbeddingsServiceStub(channel).Info(
                    embeddings_pb.InfoRequest(), timeout=5
                )
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    # gRPC binds dual-stack sockets: 127.0.0.1 shows up as ::ffff:127.0.0.1.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def test_only_envoys_client_listener_is_reachable_from_other_hosts(mesh: Mesh) -> None:
    client_port = int(mesh.endpoint.rsplit(":", 1)[1])
    processes = []
    for pid in mesh.state.pids.values():
        process = psutil.Process(pid)
        processes += [process, *process.children(recursive=True)]
    listening = [
        (process.name(), conn.laddr.ip, conn.laddr.port)
        for process in processes
        for conn in process.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    # A set: Envoy opens one socket per worker thread on each listener (SO_REUSEPORT).
    exposed = {entry for entry in listening if not is_loopback(entry[1])}
    assert exposed == {("envoy", "0.0.0.0", client_port)}, listening
    # Every service replica and Envoy's admin and internal listeners are on loopback.
    loopback_ports = {port for _, ip, port in listening if is_loopback(ip)}
    assert {replica.port for replica in mesh.state.replicas} <= loopback_ports
    assert int(mesh.admin.rsplit(":", 1)[1]) in loopback_ports


def test_status_reports_every_replica_and_envoys_counters(mesh: Mesh) -> None:
    result = subprocess.run(
        ragmesh_command("status"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for replica in mesh.state.replicas:
        assert f"{replica.name}" in result.stdout
    assert result.stdout.count("SERVING") >= len(mesh.state.replicas)
    assert "retries" in result.stdout and "ejections" in result.stdout


async def envoy_counter(mesh: Mesh, name: str) -> int:
    stats = json.loads(await admin_get(mesh.admin, f"/stats?format=json&filter=^{name}$"))
    values = [entry["value"] for entry in stats["stats"] if entry.get("name") == name]
    return int(values[0]) if values else 0


def start_replica(mesh: Mesh, target: str, log_path: Path) -> subprocess.Popen[bytes]:
    """An embeddings replica with the settings `ragmesh up` gives one."""
    env = {
        **os.environ,
        **mesh.env,
        "RAGMESH_MESH__TLS": "true",
        "RAGMESH_EMBEDDINGS__LISTEN": target,
    }
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            ragmesh_command("serve", "embeddings"),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
        )


async def test_killing_a_replica_under_load_is_invisible_to_clients(mesh: Mesh) -> None:
    victim = next(r for r in mesh.state.replicas if r.name == "embeddings-0")
    victim_pid = mesh.state.pids[victim.name]
    failures: list[BaseException] = []
    successes = 0
    stop_at = time.monotonic() + 8.0

    async with mesh.channel() as channel:
        client = embeddings_grpc.EmbeddingsServiceStub(channel)

        async def steady_load(worker: int) -> None:
            nonlocal successes
            call = 0
            while time.monotonic() < stop_at:
                call += 1
                try:
                    await client.Embed(
                        embeddings_pb.EmbedRequest(inputs=[f"load {worker}-{call}"]), timeout=30
                    )
                    successes += 1
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc)

        load = asyncio.gather(*(steady_load(worker) for worker in range(6)))
        await asyncio.sleep(2.0)
        os.kill(victim_pid, signal.SIGKILL)
        await load

    assert not failures, [f"{f.code()}: {f.details()}" for f in failures[:5]]  # type: ignore[attr-defined]
    assert successes > 20
    assert await envoy_counter(mesh, "cluster.embeddings.upstream_rq_retry") >= 1
    ejected = await envoy_counter(
        mesh, "cluster.embeddings.outlier_detection.ejections_enforced_total"
    )
    health_failures = await envoy_counter(mesh, "cluster.embeddings.health_check.failure")
    assert ejected >= 1, f"no ejection (health-check failures: {health_failures})"

    # Restart the replica as `up` started it: it returns to rotation through health checks.
    log_path = mesh.state_dir / "embeddings-0-restarted.log"
    restarted = start_replica(mesh, victim.target, log_path)
    try:
        deadline = time.monotonic() + 120
        host = f"embeddings::{victim.target}::health_flags::healthy"
        while host not in await admin_get(mesh.admin, "/clusters"):
            assert restarted.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, await admin_get(mesh.admin, "/clusters")
            await asyncio.sleep(0.5)
        # Back in rotation: calls through Envoy reach it again.
        async with mesh.channel() as channel:
            client = embeddings_grpc.EmbeddingsServiceStub(channel)
            for call in range(200):
                await client.Embed(embeddings_pb.EmbedRequest(inputs=[f"back {call}"]), timeout=30)
                if "EmbeddingsService/Embed" in log_path.read_text():
                    break
                await asyncio.sleep(0.1)
        assert "EmbeddingsService/Embed" in log_path.read_text(), await admin_get(
            mesh.admin, "/clusters"
        )
    finally:
        restarted.terminate()
        restarted.wait(30)
