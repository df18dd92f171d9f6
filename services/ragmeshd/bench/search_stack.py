"""Starting a private search stack for `ragmesh eval` and `ragmesh bench search`: the
embedded PostgreSQL (pgvector backend), optionally an embeddings server, and a search server,
each a child process on a free loopback port, in dependency order by health, stopped (by PID,
through the supervisor) when the block ends."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ragmeshd.bench.ports import free_port
from ragmeshd.embeddings.server import SERVICE_NAME as EMBEDDINGS_SERVICE
from ragmeshd.executables import ragmesh_argv
from ragmeshd.postgres.embedded import EmbeddedPostgres, accepts_connections
from ragmeshd.runtime.health_client import SERVING, check_health
from ragmeshd.search.server import SERVICE_NAME as SEARCH_SERVICE
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.processes import ProcessSpec, Supervisor

STARTUP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Stack:
    search_target: str
    embeddings_target: str
    # The database the search server uses ("" for the Qdrant backend).
    pg_dsn: str
    logs_dir: Path


def _grpc_ready(target: str, service: str) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        return await check_health(target, service) == SERVING

    return ready


@contextmanager
def search_stack(
    state_dir: Path,
    *,
    backend: str = "pgvector",
    embeddings_target: str | None = None,
    start_embeddings: bool = True,
    search_flags: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """Start the stack under `state_dir` (logs in state_dir/logs); yields its targets.

    With `embeddings_target` given (or start_embeddings False) no embeddings server starts.
    """
    logs = MeshLayout(state_dir).logs_dir
    env = {
        "RAGMESH_STATE_DIR": str(state_dir),
        # A private stack on loopback ports of its own: no API keys, and no fixed metrics
        # ports that a running mesh may hold.
        "RAGMESH_SERVER__REQUIRE_API_KEY": "false",
        "RAGMESH_EMBEDDINGS__METRICS_LISTEN": "",
        "RAGMESH_SEARCH__METRICS_LISTEN": "",
    }
    specs: list[ProcessSpec] = []
    dsn = ""
    if backend == "pgvector":
        dsn = EmbeddedPostgres(state_dir).dsn()
        specs.append(
            ProcessSpec(
                name="postgres",
                argv=ragmesh_argv("serve", "postgres"),
                log_path=logs / "postgres.log",
                is_ready=functools.partial(accepts_connections, dsn),
                env=env,
            )
        )
    if embeddings_target is None:
        embeddings_target = f"127.0.0.1:{free_port()}"
        if start_embeddings:
            specs.append(
                ProcessSpec(
                    name="embeddings",
                    argv=ragmesh_argv("serve", "embeddings", "--listen", embeddings_target),
                    log_path=logs / "embeddings.log",
                    is_ready=_grpc_ready(embeddings_target, EMBEDDINGS_SERVICE),
                    env=env,
                )
            )
    search_target = f"127.0.0.1:{free_port()}"
    specs.append(
        ProcessSpec(
            name="search",
            argv=ragmesh_argv(
                "serve",
                "search",
                "--listen",
                search_target,
                "--backend",
                backend,
                "--embeddings-target",
                embeddings_target,
                *search_flags,
            ),
            log_path=logs / "search.log",
            is_ready=_grpc_ready(search_target, SEARCH_SERVICE),
            env=env,
        )
    )
    supervisor = Supervisor()
    try:
        asyncio.run(supervisor.start_in_order(specs, STARTUP_TIMEOUT_S))
        yield Stack(search_target, embeddings_target, dsn, logs)
    finally:
        asyncio.run(supervisor.stop_all())
