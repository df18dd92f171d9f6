"""Real processes for the search tests: one embedded PostgreSQL, and search servers on the
pgvector backend (embedded socket), on Qdrant's default (its own engine in-process under the
state folder, qdrant-edge-py), on qdrant-client's local mode (`:memory:`), and on pgvector
addressed by an explicit DSN (RAGMESH_SEARCH__PG_DSN), all shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from ragmeshd.postgres.embedded import EmbeddedPostgres
from ragmeshd.search.server import SERVICE_NAME as SEARCH_SERVICE
from tests.helpers import (
    ServerProcess,
    free_port,
    ragmesh_command,
    run_coroutine,
    running_process,
    wait_postgres,
    wait_serving,
)

BACKENDS = ["pgvector", "qdrant", "qdrant-local", "pgvector-dsn"]


@dataclass
class PostgresProcess:
    process: ServerProcess
    state_dir: Path
    dsn: str


def start_postgres(state_dir: Path, log_path: Path):  # type: ignore[no-untyped-def]
    return running_process(
        ragmesh_command("serve", "postgres"), log_path, env={"RAGMESH_STATE_DIR": str(state_dir)}
    )


def start_search(log_path: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    target = f"127.0.0.1:{free_port()}"
    argv = ragmesh_command("serve", "search", "--listen", target, *args)
    return running_process(argv, log_path, env=env, target=target)


def create_database(dsn: str, name: str) -> None:
    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    run_coroutine(create)


@pytest.fixture(scope="session")
def postgres_server(session_tmp: Path) -> Iterator[PostgresProcess]:
    state_dir = session_tmp / "pg"
    dsn = EmbeddedPostgres(state_dir).dsn()
    with start_postgres(state_dir, session_tmp / "postgres.log") as process:
        wait_postgres(dsn, process)
        yield PostgresProcess(process, state_dir, dsn)


def _serve(
    log_path: Path, embeddings: ServerProcess, *args: str, env: dict[str, str]
) -> Iterator[ServerProcess]:
    with start_search(log_path, "--embeddings-target", embeddings.target, *args, env=env) as server:
        wait_serving(server.target, SEARCH_SERVICE, server)
        yield server


@pytest.fixture(scope="session")
def search_pgvector(
    session_tmp: Path, postgres_server: PostgresProcess, embeddings_server: ServerProcess
) -> Iterator[ServerProcess]:
    """pgvector on the embedded server, found through the state directory."""
    yield from _serve(
        session_tmp / "search-pgvector.log",
        embeddings_server,
        "--backend",
        "pgvector",
        env={"RAGMESH_STATE_DIR": str(postgres_server.state_dir)},
    )


@pytest.fixture(scope="session")
def search_qdrant(session_tmp: Path, embeddings_server: ServerProcess) -> Iterator[ServerProcess]:
    """The Qdrant backend as configured by default: Qdrant's own engine in-process, in
    STATE_DIR/qdrant-edge (no location given)."""
    yield from _serve(
        session_tmp / "search-qdrant.log",
        embeddings_server,
        "--backend",
        "qdrant",
        env={"RAGMESH_STATE_DIR": str(session_tmp / "qdrant-state")},
    )


@pytest.fixture(scope="session")
def search_qdrant_local(
    session_tmp: Path, embeddings_server: ServerProcess
) -> Iterator[ServerProcess]:
    """qdrant-client's pure-Python local mode, still available as `:memory:`."""
    yield from _serve(
        session_tmp / "search-qdrant-local.log",
        embeddings_server,
        "--backend",
        "qdrant",
        "--qdrant-location",
        ":memory:",
        env={"RAGMESH_STATE_DIR": str(session_tmp / "qdrant-local-state")},
    )


@pytest.fixture(scope="session")
def search_pgvector_dsn(
    session_tmp: Path, postgres_server: PostgresProcess, embeddings_server: ServerProcess
) -> Iterator[ServerProcess]:
    """pgvector on a database named only by RAGMESH_SEARCH__PG_DSN (its state directory
    has no PostgreSQL), as an external server would be."""
    create_database(postgres_server.dsn, "external")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="external")
    yield from _serve(
        session_tmp / "search-pgvector-dsn.log",
        embeddings_server,
        env={
            "RAGMESH_SEARCH__PG_DSN": dsn,
            "RAGMESH_STATE_DIR": str(session_tmp / "no-postgres-here"),
        },
    )


@pytest.fixture(params=BACKENDS)
def search_server(request: pytest.FixtureRequest) -> ServerProcess:
    """Each contract test runs once per backend."""
    name = {
        "pgvector": "search_pgvector",
        "qdrant": "search_qdrant",
        "qdrant-local": "search_qdrant_local",
    }.get(request.param, "search_pgvector_dsn")
    server: ServerProcess = request.getfixturevalue(name)
    return server
