"""SIGKILL each part of a mesh with one replica of every service under steady traffic through
Envoy: traffic succeeds again by itself, no client ever sees INTERNAL or UNKNOWN, and after
the database is killed every acknowledged write is still readable.

How long recovery takes is printed, not asserted (no timed assertions in the suite: on a
shared 2-core machine it depends on the load); docs/operations.md records the numbers
against the 30 s target."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable

import grpc
import pytest

from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from tests.chaos.conftest import (
    GIVE_UP_S,
    RECOVERY_S,
    postgres_processes,
    read_every_acknowledged_write,
)
from tests.chaos.traffic import Traffic
from tests.helpers import REPO_ROOT, eventually_async, model_process_pid, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

# One replica of each service (the fixture's default).
CHAOS_REPLICAS: list[str] = []


async def survive(name: str, traffic: Traffic, fault: Callable[[], None]) -> None:
    """Cause `fault` under traffic; assert recovery in time and no unexpected status."""
    await traffic.wait_all_succeed(time.monotonic(), timeout_s=60)  # healthy before
    fault_at = time.monotonic()
    fault()
    recovery = await traffic.wait_all_succeed(fault_at, timeout_s=GIVE_UP_S)
    RECOVERY_S[name] = recovery
    seen = traffic.summary(fault_at)
    print(f"chaos {name}: seconds until calls succeed again {recovery}; answers: {seen}")
    unexpected = traffic.unexpected(fault_at)
    assert not unexpected, f"clients saw {unexpected[:5]}: {seen}"


def restarts(mesh: Mesh, child: str) -> int:
    return mesh.state.restarts.get(child, 0)


async def kill_child(mesh: Mesh, traffic: Traffic, child: str) -> None:
    before = restarts(mesh, child)
    await survive(
        f"SIGKILL {child}", traffic, lambda: os.kill(mesh.state.pids[child], signal.SIGKILL)
    )
    # It was `ragmesh up` that brought it back.
    await eventually_async(lambda: restarts(mesh, child) == before + 1, 30, f"{child} restarted")
    assert mesh.state.last_exit[child] == "signal SIGKILL"


async def test_killed_model_process_is_replaced(chaos_mesh: Mesh, traffic: Traffic) -> None:
    server_pid = chaos_mesh.state.pids["embeddings-0"]
    old_model = model_process_pid(server_pid)
    await survive(
        "SIGKILL embeddings model process", traffic, lambda: os.kill(old_model, signal.SIGKILL)
    )
    assert model_process_pid(server_pid) != old_model
    assert chaos_mesh.state.pids["embeddings-0"] == server_pid  # the server itself stayed up


async def test_killed_search_server_is_restarted(chaos_mesh: Mesh, traffic: Traffic) -> None:
    await kill_child(chaos_mesh, traffic, "search-0")


async def test_killed_coordinator_is_restarted(chaos_mesh: Mesh, traffic: Traffic) -> None:
    await kill_child(chaos_mesh, traffic, "coordinator-0")


async def test_killed_postgres_loses_no_acknowledged_write(
    chaos_mesh: Mesh, traffic: Traffic
) -> None:
    before = restarts(chaos_mesh, "postgres")
    postmaster = postgres_processes(chaos_mesh)[0]
    await survive(
        "SIGKILL PostgreSQL (postmaster)", traffic, lambda: postmaster.send_signal(signal.SIGKILL)
    )
    await eventually_async(
        lambda: restarts(chaos_mesh, "postgres") == before + 1, 30, "postgres restarted"
    )
    acknowledged = list(traffic.acknowledged)
    assert len(acknowledged) > 10
    missing = await read_every_acknowledged_write(chaos_mesh, acknowledged)
    assert not missing, (
        f"{len(missing)} of {len(acknowledged)} acknowledged writes lost: {missing[:5]}"
    )


async def test_killed_envoy_is_restarted(chaos_mesh: Mesh, traffic: Traffic) -> None:
    await kill_child(chaos_mesh, traffic, "envoy")


async def limited_key_answers(mesh: Mesh, key: str, calls: int) -> list[str]:
    """The status names of `calls` Info calls made with a rate-limited key."""
    answers = []
    async with grpc.aio.secure_channel(mesh.endpoint, mesh.client_credentials()) as channel:
        stub = embeddings_grpc.EmbeddingsServiceStub(channel)
        for _ in range(calls):
            try:
                await stub.Info(
                    embeddings_pb.InfoRequest(), metadata=[("x-api-key", key)], timeout=10
                )
                answers.append("OK")
            except grpc.aio.AioRpcError as error:
                answers.append(error.code().name)
    return answers


def create_limited_key(mesh: Mesh) -> str:
    created = subprocess.run(
        ragmesh_command("keys", "create", "chaos-limited", "--scopes", "embed", "--rate", "50/s"),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        timeout=60,
        check=True,
    )
    return created.stdout.strip()


# Long (`make chaos`, `make test-long`): the limiter killed, then frozen, under traffic. In the
# suite, tests/unit/runtime/test_work_meter.py checks that no limiter fails closed.
@pytest.mark.long
async def test_rate_limit_service_killed_or_frozen_fails_closed(
    chaos_mesh: Mesh, traffic: Traffic
) -> None:
    """Issue 23: when the rate-limit service cannot answer, a limited key's calls are refused
    (UNAVAILABLE, never INTERNAL, never let through unmetered) while keys without a limit (the
    traffic's) never wait on it; the service comes back and the limited key works again."""
    key = create_limited_key(chaos_mesh)
    await asyncio.sleep(1.5)  # the service and the servers re-read the key store
    assert set(await limited_key_answers(chaos_mesh, key, 3)) == {"OK"}

    pid = chaos_mesh.state.pids["ratelimit"]
    os.kill(pid, signal.SIGSTOP)
    try:
        frozen = await limited_key_answers(chaos_mesh, key, 5)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert set(frozen) == {"UNAVAILABLE"}, frozen
    assert not traffic.unexpected(time.monotonic() - 30)

    before = restarts(chaos_mesh, "ratelimit")
    os.kill(pid, signal.SIGKILL)
    killed = await limited_key_answers(chaos_mesh, key, 3)
    assert set(killed) <= {"UNAVAILABLE", "OK"} and "INTERNAL" not in killed, killed
    await eventually_async(lambda: restarts(chaos_mesh, "ratelimit") == before + 1, 60, "restarted")

    async def limited_key_works() -> bool:
        return await limited_key_answers(chaos_mesh, key, 1) == ["OK"]

    await eventually_async(limited_key_works, 60, "the limited key works again", 0.5)
