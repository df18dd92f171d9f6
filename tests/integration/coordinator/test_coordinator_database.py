"""The coordinator and its database: migrations forward and back, health that follows the
database (NOT_SERVING while it is down, SERVING again by itself), and UNAVAILABLE with a
clear message while the search service is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as pb_grpc
from ragmeshd.coordinator import migrate
from ragmeshd.coordinator.server import SERVICE_NAME
from ragmeshd.postgres.embedded import EmbeddedPostgres
from tests.helpers import (
    ServerProcess,
    eventually,
    expect_error,
    free_port,
    ragmesh_command,
    running_process,
    wait_postgres,
)
from tests.integration.coordinator.conftest import _start_coordinator

pytestmark = pytest.mark.integration


async def test_migrations_go_forward_and_back(coordinator_pg_state: Path) -> None:
    dsn = EmbeddedPostgres(coordinator_pg_state).dsn()
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute('DROP DATABASE IF EXISTS "coordinator_migrations" WITH (FORCE)')
        await admin.execute('CREATE DATABASE "coordinator_migrations"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(
        EmbeddedPostgres(coordinator_pg_state).dsn("coordinator_migrations")
    )
    try:

        async def tables() -> set[str]:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row["tablename"] for row in rows}

        versions = [m.version for m in migrate.MIGRATIONS.discover()]
        assert await migrate.MIGRATIONS.upgrade(conn) == versions
        assert await migrate.MIGRATIONS.upgrade(conn) == []  # nothing pending
        assert {"coordinator_interactions", migrate.MIGRATIONS.table} <= await tables()
        assert await migrate.MIGRATIONS.downgrade(conn, 0) == list(reversed(versions))
        assert "coordinator_interactions" not in await tables()
        assert await migrate.MIGRATIONS.upgrade(conn) == versions
    finally:
        await conn.close()


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        try:
            return int(
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
                .status
            )
        except grpc.RpcError:
            return int(health_pb2.HealthCheckResponse.UNKNOWN)


def wait_health(target: str, status: int, timeout_s: float = 20) -> None:
    eventually(lambda: health(target) == status, timeout_s, f"health becomes {status}")


@pytest.fixture(scope="module")
def lonely_coordinator(session_tmp: Path) -> Iterator[tuple[ServerProcess, ServerProcess, Path]]:
    """A coordinator on a PostgreSQL of its own (returned too, to stop it) whose search
    service does not exist."""
    state_dir = session_tmp / "lonely-pg"
    postgres_args = ragmesh_command("serve", "postgres")
    env = {"RAGMESH_STATE_DIR": str(state_dir)}
    with running_process(postgres_args, session_tmp / "lonely-postgres.log", env=env) as pg:
        wait_postgres(EmbeddedPostgres(state_dir).dsn(), pg)
        nowhere = ServerProcess(pg.popen, f"127.0.0.1:{free_port()}", pg.log_path)
        with _start_coordinator(
            "lonely-coordinator",
            session_tmp,
            state_dir,
            nowhere,
            {},
        ) as coordinator:
            yield coordinator, pg, state_dir


async def test_search_down_is_unavailable_and_trips_the_breaker(
    lonely_coordinator: tuple[ServerProcess, ServerProcess, Path],
) -> None:
    coordinator = lonely_coordinator[0]
    client = pb_grpc.CoordinatorServiceStub(grpc.aio.insecure_channel(coordinator.target))
    request = pb.AugmentQueryRequest(query="anything", collections=["docs"])
    messages = []
    for _ in range(6):
        messages.append(
            await expect_error(
                client.AugmentQuery(request, timeout=20), grpc.StatusCode.UNAVAILABLE
            )
        )
    assert messages[0].startswith("the search service failed Search: UNAVAILABLE")
    assert "circuit breaker open" in messages[-1]


async def test_health_follows_the_database(
    lonely_coordinator: tuple[ServerProcess, ServerProcess, Path], session_tmp: Path
) -> None:
    coordinator, postgres, state_dir = lonely_coordinator
    target = coordinator.target
    client = pb_grpc.CoordinatorServiceStub(grpc.aio.insecure_channel(target))
    unknown = pb.GetInteractionRequest(interaction_id="00000000-0000-0000-0000-000000000000")
    assert health(target) == health_pb2.HealthCheckResponse.SERVING

    # The database stops: NOT_SERVING, and calls that need it say UNAVAILABLE.
    await asyncio.to_thread(postgres.stop)
    await asyncio.to_thread(wait_health, target, health_pb2.HealthCheckResponse.NOT_SERVING)
    await expect_error(
        client.GetInteraction(unknown, timeout=20),
        grpc.StatusCode.UNAVAILABLE,
        "interactions database is unreachable",
    )

    # It starts again: SERVING by itself, and the same call answers.
    with running_process(
        ragmesh_command("serve", "postgres"),
        session_tmp / "lonely-postgres-again.log",
        env={"RAGMESH_STATE_DIR": str(state_dir)},
    ):
        await asyncio.to_thread(wait_health, target, health_pb2.HealthCheckResponse.SERVING, 60)
        await expect_error(client.GetInteraction(unknown, timeout=20), grpc.StatusCode.NOT_FOUND)
