"""The whole mesh through Envoy with mutual TLS: real Envoy, real servers, real database."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import psutil
import pytest

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from ragmeshd.envoy.admin import admin_get
from ragmeshd.executables import grpcurl_path
from ragmeshd.pki.certs import ensure_certificates
from ragmeshd.runtime.api import API_FILES
from ragmeshd.runtime.auth import KeyStore
from ragmeshd.runtime.channels import metadata_interceptors
from ragmeshd.runtime.tls import channel_credentials
from ragmeshd.supervisor.prometheus import prometheus_config
from tests.e2e.dashboard import assert_every_panel_has_data, dashboard_traffic
from tests.helpers import REPO_ROOT, call_every_rpc, eventually_async, free_port, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

EMBEDDINGS = "ragmesh.embeddings.v1.EmbeddingsService"
SEARCH = "ragmesh.search.v1.SearchService"
COORDINATOR = "ragmesh.coordinator.v1.CoordinatorService"


def grpcurl(mesh: Mesh, *args: str, data: dict | None = None) -> subprocess.CompletedProcess[str]:
    command = [grpcurl_path(), *mesh.tls_flags()]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [mesh.endpoint, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_grpcurl_lists_describes_and_calls_through_envoy(mesh: Mesh) -> None:
    listed = grpcurl(mesh, "list")
    assert listed.returncode == 0, listed.stderr
    assert {EMBEDDINGS, SEARCH, COORDINATOR} <= set(listed.stdout.split())

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

    # Ask streams: grpcurl prints one JSON object per message, the summary last.
    asked = grpcurl(
        mesh,
        f"{COORDINATOR}/Ask",
        data={"query": "where are vectors stored?", "collections": ["e2e"]},
    )
    assert asked.returncode == 0, asked.stderr
    assert '"summary"' in asked.stdout and '"documentId": "pg"' in asked.stdout


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
    as_json = subprocess.run(
        ragmesh_command("--state-dir", str(mesh.state_dir), "status", "--json"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
    )
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["healthy"] is True
    health = {process["name"]: process["health"] for process in document["processes"]}
    assert all(health[replica.name] == "SERVING" for replica in mesh.state.replicas)
    assert set(document["envoy"]["clusters"]) >= {"embeddings", "search", "coordinator"}


async def envoy_counter(mesh: Mesh, name: str) -> int:
    stats = json.loads(await admin_get(mesh.admin, f"/stats?format=json&filter=^{name}$"))
    values = [entry["value"] for entry in stats["stats"] if entry.get("name") == name]
    return int(values[0]) if values else 0


async def test_every_rpc_through_envoy_needs_a_valid_key(mesh: Mesh) -> None:
    revoked = KeyStore(mesh.state_dir / "keys").create("leaver")
    KeyStore(mesh.state_dir / "keys").revoke(revoked.split("_")[1])
    await asyncio.sleep(1.5)  # servers re-read the key store within a second
    for key in (None, revoked):
        interceptors = metadata_interceptors(key) if key else []
        async with grpc.aio.secure_channel(
            mesh.endpoint, mesh.client_credentials(), interceptors=interceptors
        ) as channel:
            codes = await call_every_rpc(channel)
        assert len(codes) == sum(
            len(service.methods) for file in API_FILES for service in file.services_by_name.values()
        )
        assert set(codes.values()) == {"UNAUTHENTICATED"}, (key, codes)


def read_json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_one_request_id_follows_a_query_through_every_service(mesh: Mesh) -> None:
    request_id = f"e2e-{time.time_ns()}"
    async with mesh.channel() as channel:
        search = search_grpc.SearchServiceStub(channel)
        await search.CreateCollection(search_pb.CreateCollectionRequest(name="followed"))
        document = search_pb.Document(id="pg", text="Vectors are stored in PostgreSQL.")
        await search.UpsertDocuments(
            search_pb.UpsertDocumentsRequest(collection="followed", documents=[document])
        )
        ask = coordinator_grpc.CoordinatorServiceStub(channel).Ask(
            coordinator_pb.AskRequest(query="where are vectors stored?", collections=["followed"]),
            metadata=(("x-request-id", request_id),),
            timeout=60,
        )
        messages = [message async for message in ask]
    assert messages[-1].HasField("summary")
    logs = mesh.state_dir / "logs"
    seen_in = set()
    for log in logs.glob("*.log"):
        if log.name.endswith(".stderr.log") or log.name == "envoy.log":
            continue
        for line in read_json_lines(log):  # every line is JSON
            if line.get("request_id") == request_id:
                seen_in.add(line["service"])
    assert {"coordinator", "search", "embeddings"} <= seen_in


async def test_prometheus_scrapes_every_target_and_sees_traffic(mesh: Mesh, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "the prometheus binary is missing: `make test` installs it"
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config(mesh.state.replicas, mesh.admin, scrape_interval_s=1))
    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "prometheus.log"
    process = start_prometheus(prometheus, config, tmp_path / "data", address, log_path)
    try:
        targets = await wait_for_targets_up(address, len(mesh.state.replicas) + 1, log_path)
        jobs = {target["labels"]["job"] for target in targets}
        services = {replica.service for replica in mesh.state.replicas}
        assert jobs == {f"ragmesh-{service}" for service in services} | {"envoy"}
        assert {"embeddings", "search", "llm", "coordinator"} <= services

        embed_calls = 'sum(grpc_server_handled_total{grpc_method="Embed",grpc_code="OK"})'
        envoy_requests = 'sum(envoy_cluster_upstream_rq_total{envoy_cluster_name="embeddings"})'
        before = await prometheus_value(address, embed_calls)
        before_envoy = await prometheus_value(address, envoy_requests)
        async with mesh.channel() as channel:
            client = embeddings_grpc.EmbeddingsServiceStub(channel)
            for call in range(20):
                await client.Embed(embeddings_pb.EmbedRequest(inputs=[f"scraped {call}"]))

        async def moved(query: str, at_least: float) -> bool:
            return await prometheus_value(address, query) >= at_least

        await eventually_async(
            lambda: moved(embed_calls, before + 20), 30, "the Embed counter", interval_s=0.5
        )
        await eventually_async(
            lambda: moved(envoy_requests, before_envoy + 20),
            30,
            "Envoy's request counter",
            interval_s=0.5,
        )
        assert await prometheus_value(address, "sum(ragmesh_embeddings_batch_size_count)") > 0
        # Every Grafana panel's query returns data once traffic has moved its series.
        async with mesh.channel() as channel:
            await assert_every_panel_has_data(
                lambda path: prometheus_get(address, path), lambda: dashboard_traffic(channel)
            )
    finally:
        process.terminate()
        process.wait(30)


def start_prometheus(
    binary: str, config: Path, data: Path, address: str, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address={address}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def prometheus_get(address: str, path: str) -> dict:
    def get() -> dict:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
            return dict(json.loads(response.read()))

    return await asyncio.to_thread(get)


async def wait_for_targets_up(address: str, count: int, log_path: Path) -> list[dict]:
    deadline = time.monotonic() + 60
    while True:
        try:
            body = await prometheus_get(address, "/api/v1/targets")
            targets = body["data"]["activeTargets"]
            if len(targets) == count and all(t["health"] == "up" for t in targets):
                return list(targets)
        except (OSError, ValueError):
            targets = []
        if time.monotonic() > deadline:
            log = await asyncio.to_thread(log_path.read_text)
            raise AssertionError(f"targets not all up: {targets}\n{log[-2000:]}")
        await asyncio.sleep(0.5)


async def prometheus_value(address: str, query: str) -> float:
    body = await prometheus_get(address, f"/api/v1/query?query={urllib.parse.quote(query)}")
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


async def test_killing_a_replica_under_load_is_invisible_to_clients(mesh: Mesh) -> None:
    """Six callers keep Embed busy; embeddings-0 is killed once calls flow, and the load goes
    on until 20 more calls have succeeded and Envoy has retried and ejected (conditions, not
    a number of seconds): no caller sees a failure."""
    victim = next(r for r in mesh.state.replicas if r.name == "embeddings-0")
    victim_pid = mesh.state.pids[victim.name]
    failures: list[BaseException] = []
    successes = 0
    stop = asyncio.Event()

    async with mesh.channel() as channel:
        client = embeddings_grpc.EmbeddingsServiceStub(channel)

        async def steady_load(worker: int) -> None:
            nonlocal successes
            call = 0
            while not stop.is_set():
                call += 1
                try:
                    await client.Embed(
                        embeddings_pb.EmbedRequest(inputs=[f"load {worker}-{call}"]), timeout=30
                    )
                    successes += 1
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc)

        load = asyncio.gather(*(steady_load(worker) for worker in range(6)))
        try:
            deadline = time.monotonic() + 120  # hang guards, not speed bounds
            while successes < 6:
                assert time.monotonic() < deadline, "no Embed succeeded before the kill"
                await asyncio.sleep(0.05)
            os.kill(victim_pid, signal.SIGKILL)
            at_kill = successes
            deadline = time.monotonic() + 180
            while not (
                successes - at_kill >= 20
                and await envoy_counter(mesh, "cluster.embeddings.upstream_rq_retry") >= 1
                and await envoy_counter(
                    mesh, "cluster.embeddings.outlier_detection.ejections_enforced_total"
                )
                >= 1
            ):
                if time.monotonic() > deadline:
                    health = await envoy_counter(mesh, "cluster.embeddings.health_check.failure")
                    raise AssertionError(
                        f"{successes - at_kill} calls after the kill; retries and ejections"
                        f" not both seen (health-check failures: {health})"
                    )
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await load

    assert not failures, [f"{f.code()}: {f.details()}" for f in failures[:5]]  # type: ignore[attr-defined]

    # `ragmesh up` starts it again; it returns to rotation through health checks.
    await eventually_async(
        lambda: mesh.state.pids[victim.name] != victim_pid, 120, "embeddings-0 restarted"
    )
    assert mesh.state.restarts[victim.name] >= 1
    assert mesh.state.last_exit[victim.name] == "signal SIGKILL"
    log_path = mesh.state_dir / "logs" / f"{victim.name}.log"
    calls_before = log_path.read_text().count("EmbeddingsService/Embed")
    host = f"embeddings::{victim.target}::health_flags::healthy"

    async def in_rotation() -> bool:
        return host in await admin_get(mesh.admin, "/clusters")

    await eventually_async(in_rotation, 120, f"{host} in Envoy's /clusters", interval_s=0.5)
    # Back in rotation: calls through Envoy reach it again.
    async with mesh.channel() as channel:
        client = embeddings_grpc.EmbeddingsServiceStub(channel)
        for call in range(200):
            await client.Embed(embeddings_pb.EmbedRequest(inputs=[f"back {call}"]), timeout=30)
            if log_path.read_text().count("EmbeddingsService/Embed") > calls_before:
                break
            await asyncio.sleep(0.1)
    assert log_path.read_text().count("EmbeddingsService/Embed") > calls_before, await admin_get(
        mesh.admin, "/clusters"
    )
