"""Envoy's rendered configuration, checked by Envoy itself and exercised with real traffic.

Each behaviour test starts a real Envoy (its own process, stopped by PID) in front of two tiny
grpc.aio replicas of one service, all over mutual TLS with certificates from
ragmeshd/pki/certs.py. Replica "bad" fails every call with UNAVAILABLE; replica "good"
answers. Listeners and admin are bound to loopback on free ports.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from ragmeshd.bench.ports import free_port
from ragmeshd.envoy.admin import stop_taking_calls
from ragmeshd.envoy.config import (
    envoy_binary,
    envoy_command,
    render_config,
    validate_config,
    write_config,
)
from ragmeshd.envoy.topology import EnvoyConfigError, Topology, UpstreamCluster
from ragmeshd.identities import identity_uri
from ragmeshd.pki.certs import CertificatePaths, ensure_certificates
from ragmeshd.runtime.tls import channel_credentials, peer_uris
from ragmeshd.runtime.tls_reload import reloading_server_credentials

pytestmark = pytest.mark.integration

SERVICE = "ragmesh.smoke.v1.SmokeService"
IDEMPOTENT = f"/{SERVICE}/Idempotent"
ONCE = f"/{SERVICE}/Once"
WHOAMI = f"/{SERVICE}/Whoami"
READY_TIMEOUT_S = 30.0
SLOW = f"/{SERVICE}/Slow"
SLOW_CALL_S = 1.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return ensure_certificates(tmp_path_factory.mktemp("mesh") / "certs", services=("smoke",))


@pytest.fixture(scope="module")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    """A complete set from a different CA: valid certificates the mesh must not trust."""
    return ensure_certificates(tmp_path_factory.mktemp("foreign") / "certs", services=("smoke",))


# --- rendering and validation ---------------------------------------------------------------


def test_two_clusters_of_two_replicas_pass_envoy_validate(
    certs: CertificatePaths, tmp_path: Path
) -> None:
    topology = Topology(
        clusters=[
            UpstreamCluster(
                "embeddings",
                "ragmesh.embeddings.v1.EmbeddingsService",
                [("127.0.0.1", 50051), ("127.0.0.1", 50061)],
                ["/ragmesh.embeddings.v1.EmbeddingsService/Embed"],
            ),
            UpstreamCluster(
                "search", "ragmesh.search.v1.SearchService", [("localhost", 50052), ("::1", 50062)]
            ),
        ],
        certificates=certs,
    )
    path = write_config(topology, tmp_path / "envoy.yaml")

    validate_config(path)

    # Nothing deprecated or merely tolerated: Envoy's own output stays free of warnings.
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        check=True,
    )
    output = result.stdout + result.stderr
    assert "OK" in output
    assert "deprecated" not in output.lower() and "[warning]" not in output


def test_tracing_to_an_otlp_collector_passes_envoy_validate(
    certs: CertificatePaths, tmp_path: Path
) -> None:
    topology = Topology(
        clusters=[UpstreamCluster("smoke", SERVICE, [("127.0.0.1", 1)])],
        certificates=certs,
        otlp_endpoint=("127.0.0.1", 4317),
        trace_sampling_ratio=0.01,
    )
    path = write_config(topology, tmp_path / "envoy.yaml")

    validate_config(path)

    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        check=True,
    )
    output = result.stdout + result.stderr
    assert "deprecated" not in output.lower() and "[warning]" not in output


def test_validate_config_raises_with_envoys_output(certs: CertificatePaths, tmp_path: Path) -> None:
    topology = Topology(
        clusters=[UpstreamCluster("smoke", SERVICE, [("127.0.0.1", 1)])], certificates=certs
    )
    broken = render_config(topology).replace("lb_policy: LEAST_REQUEST", "lb_policy: NO_SUCH")
    path = tmp_path / "broken.yaml"
    path.write_text(broken)

    with pytest.raises(EnvoyConfigError, match="NO_SUCH"):
        validate_config(path)


# --- a running mesh -------------------------------------------------------------------------


@dataclass
class Replica:
    name: str
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int


async def start_replica(certs: CertificatePaths, name: str, *, fail: bool) -> Replica:
    """A replica of SERVICE with health and reflection, requiring mTLS like every ragmesh server."""

    async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{name} is failing")
        return name.encode()

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(SLOW_CALL_S)
        return name.encode()

    async def whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        return json.dumps(
            {
                "request_id": metadata.get("x-request-id"),
                "peer_uris": peer_uris(context),
                "time_remaining": context.time_remaining(),
            }
        ).encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Idempotent": grpc.unary_unary_rpc_method_handler(answer),
                    "Once": grpc.unary_unary_rpc_method_handler(answer),
                    "Whoami": grpc.unary_unary_rpc_method_handler(whoami),
                    "Slow": grpc.unary_unary_rpc_method_handler(slow),
                },
            )
        ]
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    identity = certs.services["smoke"]
    port = server.add_secure_port(
        "127.0.0.1:0", reloading_server_credentials(identity.cert, identity.key, certs.ca)
    )
    await server.start()
    await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    return Replica(name, server, health_servicer, port)


@dataclass
class Envoy:
    popen: subprocess.Popen[bytes]
    client_target: str
    internal_target: str
    admin_url: str
    log_path: Path

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as response:
            return str(response.read().decode())

    def stat(self, name: str) -> int:
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def host_flags(self, cluster: str) -> dict[int, str]:
        """Each host's health flags by port, from /clusters ("healthy" when in rotation)."""
        flags = {}
        for line in self.admin("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
                flags[int(parts[1].rsplit(":", 1)[1])] = parts[3]
        return flags

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Mesh:
    envoy: Envoy
    good: Replica
    bad: Replica
    certs: CertificatePaths

    def client_channel(
        self, credentials: grpc.ChannelCredentials | None = None
    ) -> grpc.aio.Channel:
        if credentials is None:
            credentials = channel_credentials(
                self.certs.ca, self.certs.client.cert, self.certs.client.key
            )
        return grpc.aio.secure_channel(self.envoy.client_target, credentials)

    async def wait_hosts(self, expected: Callable[[dict[int, str]], bool]) -> dict[int, str]:
        deadline = time.monotonic() + READY_TIMEOUT_S
        flags: dict[int, str] = {}
        while time.monotonic() < deadline:
            if self.envoy.popen.poll() is not None:
                raise AssertionError(f"envoy exited:\n{self.envoy.log()}")
            try:
                flags = self.envoy.host_flags("smoke")
            except OSError:
                flags = {}
            if flags and expected(flags):
                return flags
            await asyncio.sleep(0.1)
        raise AssertionError(f"hosts never reached the expected state: {flags}\n{self.envoy.log()}")


def start_envoy(topology: Topology, workdir: Path) -> Envoy:
    config = write_config(topology, workdir / "envoy.yaml")
    log_path = workdir / "envoy.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            envoy_command(config, log_level="warning"),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Envoy(
        popen,
        client_target=f"127.0.0.1:{topology.client_listener[1]}",
        internal_target=f"127.0.0.1:{topology.internal_listener[1]}",
        admin_url=f"http://127.0.0.1:{topology.admin[1]}",
        log_path=log_path,
    )


def stop_envoy(envoy: Envoy) -> None:
    if envoy.popen.poll() is None:
        envoy.popen.terminate()
        try:
            envoy.popen.wait(10)
        except subprocess.TimeoutExpired:
            envoy.popen.kill()
            envoy.popen.wait()


@pytest.fixture
async def mesh(certs: CertificatePaths, tmp_path: Path) -> AsyncIterator[Mesh]:
    good = await start_replica(certs, "good", fail=False)
    bad = await start_replica(certs, "bad", fail=True)
    topology = Topology(
        clusters=[
            UpstreamCluster(
                "smoke",
                SERVICE,
                [("127.0.0.1", good.port), ("127.0.0.1", bad.port)],
                retry_methods=[IDEMPOTENT],
            )
        ],
        certificates=certs,
        client_listener=("127.0.0.1", free_port()),
        internal_listener=("127.0.0.1", free_port()),
        admin=("127.0.0.1", free_port()),
    )
    envoy = start_envoy(topology, tmp_path)
    mesh = Mesh(envoy, good, bad, certs)
    try:
        await mesh.wait_hosts(lambda flags: all(f == "healthy" for f in flags.values()))
        yield mesh
    finally:
        stop_envoy(envoy)
        await asyncio.gather(good.server.stop(None), bad.server.stop(None))


async def list_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.done_writing()
    response = await call.read()
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    return [service.name for service in response.list_services_response.service]


async def test_reflection_through_envoy_with_the_client_certificate(mesh: Mesh) -> None:
    async with mesh.client_channel() as channel:
        services = await asyncio.wait_for(list_services(channel), 10)
    assert SERVICE in services


async def test_no_client_certificate_fails_the_handshake(mesh: Mesh) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=mesh.certs.ca.read_bytes())
    async with mesh.client_channel(credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_services(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_fails_the_handshake(
    mesh: Mesh, foreign_certs: CertificatePaths
) -> None:
    # Trusting the real CA for Envoy's side, presenting a client certificate it did not sign.
    credentials = channel_credentials(
        mesh.certs.ca, foreign_certs.client.cert, foreign_certs.client.key
    )
    async with mesh.client_channel(credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_services(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_internal_listener_admits_service_identities_only(mesh: Mesh) -> None:
    certs = mesh.certs
    service_client = certs.service_clients["smoke"]
    as_service = channel_credentials(certs.ca, service_client.cert, service_client.key)
    async with grpc.aio.secure_channel(mesh.envoy.internal_target, as_service) as channel:
        assert SERVICE in await asyncio.wait_for(list_services(channel), 10)

    as_user = channel_credentials(certs.ca, certs.client.cert, certs.client.key)
    async with grpc.aio.secure_channel(mesh.envoy.internal_target, as_user) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_services(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_replicas_refuse_plaintext_and_certificate_less_calls(mesh: Mesh) -> None:
    target = f"127.0.0.1:{mesh.good.port}"
    ca = mesh.certs.ca
    for channel in (
        grpc.aio.insecure_channel(target),
        grpc.aio.secure_channel(
            target,
            grpc.ssl_channel_credentials(root_certificates=ca.read_bytes()),
            options=[("grpc.ssl_target_name_override", "smoke.ragmesh.internal")],
        ),
    ):
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(ONCE)(b"", timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_replicas_see_envoys_identity_and_the_request_id(mesh: Mesh) -> None:
    async with mesh.client_channel() as channel:
        whoami = channel.unary_unary(WHOAMI)
        given = json.loads(await whoami(b"", metadata=[("x-request-id", "req-123")], timeout=5))
        generated = json.loads(await whoami(b"", timeout=5))

    assert given["peer_uris"] == [identity_uri("envoy", "envoy-upstream")]
    assert given["request_id"] == "req-123"
    assert generated["request_id"] and generated["request_id"] != "req-123"


async def test_a_call_without_a_deadline_gets_the_routes_default(mesh: Mesh) -> None:
    """Envoy sends the server the route's default deadline (grpc-timeout, 30 s here) when the
    caller sent none, and the caller's own deadline (up to the cap) otherwise, so the server
    stops work nobody waits for."""
    async with mesh.client_channel() as channel:
        whoami = channel.unary_unary(WHOAMI)
        without = json.loads(await whoami(b""))
        with_own = json.loads(await whoami(b"", timeout=5))
    assert without["time_remaining"] is not None
    assert 5 < without["time_remaining"] <= 30
    assert with_own["time_remaining"] <= 5.1  # grpc-timeout is rounded up


async def test_health_is_not_routed_through_envoy(mesh: Mesh) -> None:
    async with mesh.client_channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_idempotent_methods_are_retried_on_another_replica(mesh: Mesh) -> None:
    async with mesh.client_channel() as channel:
        call = channel.unary_unary(IDEMPOTENT)
        answers = [await call(b"", timeout=5) for _ in range(20)]

    assert set(answers) == {b"good"}
    assert mesh.envoy.stat("cluster.smoke.upstream_rq_retry") >= 1
    assert mesh.envoy.stat("cluster.smoke.upstream_rq_retry_success") >= 1


async def test_other_methods_are_not_retried_and_a_failing_replica_is_ejected(
    mesh: Mesh,
) -> None:
    ejections = "cluster.smoke.outlier_detection.ejections_enforced_consecutive_gateway_failure"
    failures = 0
    async with mesh.client_channel() as channel:
        call = channel.unary_unary(ONCE)
        # The bad replica's UNAVAILABLE reaches the caller (no retry) until two in a row eject
        # it (consecutive_gateway_failure: 2).
        for _ in range(60):
            try:
                await call(b"", timeout=5)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                failures += 1
            if mesh.envoy.stat(ejections) >= 1:
                break
        assert failures >= 2
        assert mesh.envoy.stat("cluster.smoke.upstream_rq_retry") == 0
        assert "failed_outlier_check" in mesh.envoy.host_flags("smoke")[mesh.bad.port]
        # Ejected for base_ejection_time (30 s): every call now lands on the good replica.
        answers = [await call(b"", timeout=5) for _ in range(10)]
    assert set(answers) == {b"good"}


async def test_a_replica_reporting_not_serving_leaves_the_rotation(mesh: Mesh) -> None:
    bad = mesh.bad
    # Only the service's own name goes NOT_SERVING: Envoy must be checking that name.
    await bad.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    flags = await mesh.wait_hosts(lambda f: "failed_active_hc" in f[bad.port])
    assert flags[mesh.good.port] == "healthy"

    async with mesh.client_channel() as channel:
        call = channel.unary_unary(ONCE)
        answers = [await call(b"", timeout=5) for _ in range(10)]
    assert set(answers) == {b"good"}

    await bad.health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    await mesh.wait_hosts(lambda f: f[bad.port] == "healthy")


async def test_admin_serves_stats_and_clusters_on_loopback(mesh: Mesh) -> None:
    assert "envoy_cluster_upstream_rq_retry" in mesh.envoy.admin("/stats/prometheus")
    assert "smoke::" in mesh.envoy.admin("/clusters")
    assert "cluster.smoke.circuit_breakers.default.remaining_rq" in mesh.envoy.admin("/stats")


async def test_grpcurl_lists_services_through_envoy(mesh: Mesh) -> None:
    grpcurl = Path(sys.executable).parent / "grpcurl"
    if not grpcurl.exists() and shutil.which("grpcurl") is None:
        pytest.skip("grpcurl is not installed")
    certs = mesh.certs
    argv = [
        str(grpcurl) if grpcurl.exists() else "grpcurl",
        "-cacert", str(certs.ca),
        "-cert", str(certs.client.cert),
        "-key", str(certs.client.key),
        mesh.envoy.client_target,
        "list",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, output.decode()
    assert SERVICE in output.decode().split()


def test_key_rate_limits_and_key_ids_pass_envoy_validate(
    certs: CertificatePaths, tmp_path: Path
) -> None:
    topology = Topology(
        clusters=[UpstreamCluster("smoke", SERVICE, [("127.0.0.1", 1)])],
        certificates=certs,
        ratelimit_socket=tmp_path / "run" / "ratelimit.sock",
    )
    path = write_config(topology, tmp_path / "envoy.yaml")
    validate_config(path)
    text = path.read_text()
    assert "envoy.filters.http.ratelimit" in text and "ragmesh:key_id" in text


def test_admin_on_a_unix_socket_passes_envoy_validate(
    certs: CertificatePaths, tmp_path: Path
) -> None:
    topology = Topology(
        clusters=[UpstreamCluster("smoke", SERVICE, [("127.0.0.1", 1)])],
        certificates=certs,
        admin_socket=tmp_path / "run" / "envoy-admin.sock",
    )
    path = write_config(topology, tmp_path / "envoy.yaml")
    validate_config(path)
    config = yaml.safe_load(path.read_text())
    assert config["admin"]["address"]["pipe"]["mode"] == 0o600
    assert "admin_stats" in [
        listener["name"] for listener in config["static_resources"]["listeners"]
    ]


async def test_stopping_the_client_listener_lets_calls_in_flight_finish(
    certs: CertificatePaths, tmp_path: Path
) -> None:
    """`ragmesh up`'s first step when it stops: Envoy's client listener takes no new
    connection, the call it already took finishes, and the internal listener (the services'
    calls to each other) still serves."""
    replica = await start_replica(certs, "good", fail=False)
    admin_socket = tmp_path / "run" / "envoy-admin.sock"
    admin_socket.parent.mkdir()
    topology = Topology(
        clusters=[UpstreamCluster("smoke", SERVICE, [("127.0.0.1", replica.port)])],
        certificates=certs,
        client_listener=("127.0.0.1", free_port()),
        internal_listener=("127.0.0.1", free_port()),
        admin=("127.0.0.1", free_port()),
        admin_socket=admin_socket,
    )
    envoy = start_envoy(topology, tmp_path)
    mesh = Mesh(envoy, replica, replica, certs)
    as_user = channel_credentials(certs.ca, certs.client.cert, certs.client.key)
    service_client = certs.service_clients["smoke"]
    as_service = channel_credentials(certs.ca, service_client.cert, service_client.key)
    try:
        await mesh.wait_hosts(lambda flags: all(f == "healthy" for f in flags.values()))
        async with grpc.aio.secure_channel(envoy.client_target, as_user) as channel:
            in_flight = asyncio.ensure_future(channel.unary_unary(SLOW)(b"", timeout=30))
            for _ in range(500):  # until Envoy has taken the call (10 s at most)
                if envoy.stat("http.client.downstream_rq_active") >= 1:
                    break
                await asyncio.sleep(0.02)
            left = await stop_taking_calls(str(admin_socket), limit_s=20)
            assert await in_flight == b"good"
        assert left == 0
        async with grpc.aio.secure_channel(envoy.client_target, as_user) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(IDEMPOTENT)(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(envoy.internal_target, as_service) as channel:
            assert await channel.unary_unary(IDEMPOTENT)(b"", timeout=10) == b"good"
    finally:
        stop_envoy(envoy)
        await replica.server.stop(None)
