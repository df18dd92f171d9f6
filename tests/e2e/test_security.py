"""Least privilege through Envoy, as a client sees it: scoped keys, key ids in the access log,
refusals logged, `ragmesh keys` on a running mesh, private files (issue 10)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from ragmeshd.envoy.admin import admin_get
from ragmeshd.runtime.channels import metadata_interceptors
from ragmeshd.runtime.keystore import presented_key_id
from ragmeshd.runtime.scopes import METHOD_SCOPES
from ragmeshd.runtime.tls import channel_credentials, replica_channel_options
from tests.helpers import REPO_ROOT, call_every_rpc, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

RELOAD_WAIT_S = 1.5  # servers re-read the key store within a second


def keys_cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ragmesh_command("keys", *args),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        timeout=60,
        check=False,
    )


def channel_with(mesh: Mesh, key: str) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        mesh.endpoint, mesh.client_credentials(), interceptors=metadata_interceptors(key)
    )


async def test_a_key_reaches_only_the_rpcs_its_scopes_name(mesh: Mesh) -> None:
    created = keys_cli(mesh, "create", "embed-only", "--scopes", "embed", "--expires", "30d")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    await asyncio.sleep(RELOAD_WAIT_S)
    async with channel_with(mesh, key) as channel:
        codes = await call_every_rpc(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await search_grpc.SearchServiceStub(channel).DeleteCollection(
                search_pb.DeleteCollectionRequest(name="anything"), timeout=10
            )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "lacks the scope 'search.admin'" in (error.value.details() or "")
    for method, code in codes.items():
        if METHOD_SCOPES[method] == "embed":
            assert code not in ("PERMISSION_DENIED", "UNAUTHENTICATED"), (method, code)
        else:
            assert code == "PERMISSION_DENIED", (method, code)

    listed = keys_cli(mesh, "list")
    row = next(row for row in listed.stdout.splitlines() if "embed-only" in row).split()
    # id, name, scopes, rate, created (date time), expires (date time), state
    assert row[1:4] == ["embed-only", "embed", "-"] and row[-1] == "active"
    assert row[6] != "never"


async def test_feedback_needs_its_scope_and_service_keys_only_theirs(mesh: Mesh) -> None:
    default = keys_cli(mesh, "create", "asker")  # embed, search.read, ask
    assert default.returncode == 0, default.stderr
    await asyncio.sleep(RELOAD_WAIT_S)
    async with channel_with(mesh, default.stdout.strip()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await coordinator_grpc.CoordinatorServiceStub(channel).RecordFeedback(
                coordinator_pb.RecordFeedbackRequest(interaction_id="x", rating=1), timeout=10
            )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'feedback'" in (error.value.details() or "")

    # The search service's own key may embed, and nothing else, even through Envoy.
    service_key = (mesh.state_dir / "keys" / "service-search.key").read_text().strip()
    async with channel_with(mesh, service_key) as channel:
        codes = await call_every_rpc(channel)
    allowed = {method for method, code in codes.items() if code != "PERMISSION_DENIED"}
    assert allowed == {m for m, scope in METHOD_SCOPES.items() if scope == "embed"}


async def test_access_log_names_the_key_id_and_refusals_are_logged(mesh: Mesh) -> None:
    created = keys_cli(mesh, "create", "logged", "--scopes", "search.read")
    key = created.stdout.strip()
    key_id = presented_key_id(key)
    await asyncio.sleep(RELOAD_WAIT_S)
    async with channel_with(mesh, key) as channel:
        search = search_grpc.SearchServiceStub(channel)
        await search.ListCollections(search_pb.ListCollectionsRequest(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await search.CreateCollection(search_pb.CreateCollectionRequest(name="no"), timeout=10)

    def logged() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lines = []
        for log in (mesh.state_dir / "logs").glob("search-*.log"):
            text = log.read_text()
            assert key.split("_", 2)[2] not in text  # never the secret
            lines += [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        finished = [
            line
            for line in lines
            if line.get("event") == "rpc finished"
            and line.get("grpc_method", "").endswith("/ListCollections")
            and line.get("key_id") == key_id
        ]
        refused = [
            line
            for line in lines
            if line.get("event") == "call refused"
            and line.get("key_id") == key_id
            and line.get("grpc_code") == "PERMISSION_DENIED"
        ]
        return finished, refused

    # A server writes its log lines as the calls end; wait for them, not for a fixed time.
    # Refusals are logged at most 20 per 10 s per server (RefusalLog): when earlier tests
    # filled that window, the refusal is counted, not written; refuse again until one is.
    deadline = time.monotonic() + 30
    async with channel_with(mesh, key) as channel:
        search = search_grpc.SearchServiceStub(channel)
        while not all(logged()):
            assert time.monotonic() < deadline, "the access log or the refusal never showed"
            await asyncio.sleep(1.0)
            with pytest.raises(grpc.aio.AioRpcError):
                await search.CreateCollection(
                    search_pb.CreateCollectionRequest(name="no"), timeout=10
                )


async def test_a_rotated_key_works_through_its_grace_period_only(mesh: Mesh) -> None:
    old = keys_cli(mesh, "create", "rotating", "--scopes", "search.read").stdout.strip()
    old_id = presented_key_id(old)
    assert old_id is not None
    rotated = keys_cli(mesh, "rotate", old_id, "--grace", "1h")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    await asyncio.sleep(RELOAD_WAIT_S)
    for key in (old, new):
        async with channel_with(mesh, key) as channel:
            await search_grpc.SearchServiceStub(channel).ListCollections(
                search_pb.ListCollectionsRequest(), timeout=10
            )
    ended = keys_cli(mesh, "rotate", presented_key_id(new) or "", "--grace", "0s")
    assert ended.returncode == 0, ended.stderr
    await asyncio.sleep(RELOAD_WAIT_S)
    async with channel_with(mesh, new) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await search_grpc.SearchServiceStub(channel).ListCollections(
                search_pb.ListCollectionsRequest(), timeout=10
            )
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_state_folder_and_its_secrets_are_private(mesh: Mesh) -> None:
    mode = stat.S_IMODE(mesh.state_dir.stat().st_mode)
    # As root the embedded PostgreSQL's own user must pass through (not list or read).
    assert mode == (0o711 if os.geteuid() == 0 else 0o700), oct(mode)
    # The CA key is encrypted, and no service was given its passphrase.
    assert (mesh.certs / "ca-key.pem").read_text().startswith("-----BEGIN ENCRYPTED")
    for name, pid in mesh.state.pids.items():
        environment = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"RAGMESH_CA_PASSPHRASE=" not in environment, name
    for folder in ("keys", "logs", "certs"):
        for path in (mesh.state_dir / folder).rglob("*"):
            if path.is_file():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            elif path.is_dir():
                assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


async def test_a_keys_rate_limit_holds_across_replicas_with_a_retry_hint(mesh: Mesh) -> None:
    created = keys_cli(
        mesh, "create", "limited", "--scopes", "embed", "--rate", "5/s", "--burst", "5"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    await asyncio.sleep(RELOAD_WAIT_S)
    codes: list[grpc.StatusCode] = []
    hints: list[dict[str, str]] = []
    async with channel_with(mesh, key) as channel:
        stub = embeddings_grpc.EmbeddingsServiceStub(channel)
        started = time.monotonic()
        for _ in range(4):  # 4 waves of 10 concurrent calls, spread over both replicas
            calls = [stub.Info(embeddings_pb.InfoRequest(), timeout=10) for _ in range(10)]
            for outcome in await asyncio.gather(*calls, return_exceptions=True):
                if isinstance(outcome, grpc.aio.AioRpcError):
                    codes.append(outcome.code())
                    hints.append({k: str(v) for k, v in outcome.trailing_metadata() or ()})
                else:
                    codes.append(grpc.StatusCode.OK)
        elapsed = time.monotonic() - started
    accepted = codes.count(grpc.StatusCode.OK)
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    # Mesh-wide, not per replica: the burst plus what flowed in while the calls ran.
    assert 5 <= accepted <= 5 + 5 * elapsed + 1, (accepted, elapsed)
    assert all(int(hint["retry-after"]) >= 1 and int(hint["retry-after-ms"]) > 0 for hint in hints)

    # Envoy's access log names the key by its id (Envoy flushes its log about every second).
    key_id = presented_key_id(key)
    deadline = time.monotonic() + 10
    while True:
        envoy_lines = [
            json.loads(line)
            for line in (mesh.state_dir / "logs" / "envoy.log").read_text().splitlines()
            if line.startswith("{")
        ]
        limited = [line for line in envoy_lines if line.get("key_id") == key_id]
        if len(limited) >= len(codes) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert len(limited) == len(codes), limited[-3:]
    assert key.split("_", 2)[2] not in json.dumps(envoy_lines)


def certs_cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ragmesh_command("certs", *args),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        timeout=60,
        check=False,
    )


async def info_with_certificate(
    mesh: Mesh,
    target: str,
    cert: str,
    key: str,
    options: list[tuple[str, Any]] | None = None,
) -> grpc.StatusCode:
    """Embeddings' Info at `target` with a certificate; `options` name the server to verify
    when `target` is a replica (replica_channel_options), Envoy's listener needs none."""
    credentials = channel_credentials(mesh.certs / "ca.pem", mesh.certs / cert, mesh.certs / key)
    async with grpc.aio.secure_channel(
        target,
        credentials,
        options=options or [],
        interceptors=metadata_interceptors(mesh.api_key),
    ) as channel:
        try:
            await embeddings_grpc.EmbeddingsServiceStub(channel).Info(
                embeddings_pb.InfoRequest(), timeout=10
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_a_revoked_client_certificate_is_refused_without_a_restart(mesh: Mesh) -> None:
    issued = certs_cli(mesh, "client", "bob")
    assert issued.returncode == 0, issued.stderr
    bob = ("clients/bob.pem", "clients/bob-key.pem")
    assert await info_with_certificate(mesh, mesh.endpoint, *bob) == grpc.StatusCode.OK
    envoy_pid = mesh.state.pids["envoy"]
    kept = (mesh.certs / bob[0]).read_bytes(), (mesh.certs / bob[1]).read_bytes()

    revoked = certs_cli(mesh, "revoke", "bob")
    assert revoked.returncode == 0, revoked.stderr
    # The revoked pair, as a client that kept it would present it.
    (mesh.certs / "clients" / "kept.pem").write_bytes(kept[0])
    (mesh.certs / "clients" / "kept-key.pem").write_bytes(kept[1])
    (mesh.certs / "clients" / "kept-key.pem").chmod(0o600)
    deadline = time.monotonic() + 15
    while True:
        code = await info_with_certificate(
            mesh, mesh.endpoint, "clients/kept.pem", "clients/kept-key.pem"
        )
        if code != grpc.StatusCode.OK or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert code == grpc.StatusCode.UNAVAILABLE  # the handshake fails
    assert mesh.state.pids["envoy"] == envoy_pid  # no restart
    # Other clients are unaffected.
    client = ("clients/client.pem", "clients/client-key.pem")
    assert await info_with_certificate(mesh, mesh.endpoint, *client) == grpc.StatusCode.OK


async def test_replicas_admit_only_envoys_and_the_services_certificates(mesh: Mesh) -> None:
    replica = next(r for r in mesh.state.replicas if r.service == "embeddings")
    as_embeddings = replica_channel_options("embeddings")
    user = ("clients/client.pem", "clients/client-key.pem")
    assert await info_with_certificate(mesh, replica.target, *user, as_embeddings) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    envoy = ("envoy-upstream.pem", "envoy-upstream-key.pem")
    assert await info_with_certificate(mesh, replica.target, *envoy, as_embeddings) == (
        grpc.StatusCode.OK
    )


async def test_a_replica_is_verified_by_its_service_name_only(mesh: Mesh) -> None:
    replica = next(r for r in mesh.state.replicas if r.service == "embeddings")
    served = x509.load_pem_x509_certificate((mesh.certs / "embeddings.pem").read_bytes())
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["embeddings.ragmesh.internal"]
    assert sans.get_values_for_type(x509.IPAddress) == []
    envoy = ("envoy-upstream.pem", "envoy-upstream-key.pem")
    # Its address, localhost, or another service's name: the handshake fails verification.
    for options in (
        None,
        [("grpc.ssl_target_name_override", "localhost")],
        replica_channel_options("search"),
    ):
        assert await info_with_certificate(mesh, replica.target, *envoy, options) == (
            grpc.StatusCode.UNAVAILABLE
        ), options
    assert await info_with_certificate(
        mesh, replica.target, *envoy, replica_channel_options("embeddings")
    ) == (grpc.StatusCode.OK)


def test_envoys_admin_is_a_private_socket_and_its_tcp_port_is_read_only(mesh: Mesh) -> None:
    socket_path = Path(mesh.state.admin_socket)
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    assert asyncio.run(admin_get(f"unix:{socket_path}", "/ready")).strip() == "LIVE"
    # The loopback port serves the read-only pages (Prometheus, /ready) and nothing else.
    assert "cluster.embeddings." in asyncio.run(admin_get(mesh.admin, "/stats?filter=embeddings"))
    for method, path in (("POST", "/logging?level=debug"), ("POST", "/quitquitquit")):
        request = urllib.request.Request(f"http://{mesh.admin}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
    assert mesh.popen.poll() is None

    status = subprocess.run(
        ragmesh_command("status"),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        timeout=60,
        check=False,
    )
    assert f"admin unix:{socket_path}" in status.stdout, status.stdout + status.stderr
    assert "embeddings" in status.stdout.split("Envoy (admin")[1]


async def ratelimit_requests(mesh: Mesh) -> int:
    """How many calls Envoy has made to the rate-limit service."""
    name = "cluster.ratelimit.upstream_rq_total"
    stats = json.loads(await admin_get(mesh.admin, f"/stats?format=json&filter=^{name}$"))
    return sum(int(entry["value"]) for entry in stats["stats"] if entry.get("name") == name)


async def info_code(mesh: Mesh, key: str) -> grpc.StatusCode:
    async with channel_with(mesh, key) as channel:
        try:
            await embeddings_grpc.EmbeddingsServiceStub(channel).Info(
                embeddings_pb.InfoRequest(), timeout=10
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_only_limited_keys_cost_a_rate_limit_check_and_none_skips_its_limit(
    mesh: Mesh,
) -> None:
    created = keys_cli(mesh, "create", "capped", "--scopes", "embed", "--rate", "100/s")
    assert created.returncode == 0, created.stderr
    limited = created.stdout.strip()
    assert limited.startswith("rmkl_")
    await asyncio.sleep(RELOAD_WAIT_S)

    before = await ratelimit_requests(mesh)
    for _ in range(5):  # a key without a limit: Envoy does not ask the rate-limit service
        assert await info_code(mesh, mesh.api_key) is grpc.StatusCode.OK
    assert await ratelimit_requests(mesh) == before
    assert await info_code(mesh, limited) is grpc.StatusCode.OK
    assert await ratelimit_requests(mesh) == before + 1

    # The limited key dressed as one without a limit (which Envoy would not check) is refused.
    disguised = "rmk_" + limited.split("_", 1)[1]
    assert await info_code(mesh, disguised) is grpc.StatusCode.UNAUTHENTICATED
