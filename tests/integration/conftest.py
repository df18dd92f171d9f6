"""Real server processes shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.embeddings.server import SERVICE_NAME as EMBEDDINGS_SERVICE
from tests.helpers import ServerProcess, free_port, ragmesh_command, running_process, wait_serving


def start_embeddings(log_path: Path, *extra_args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    target = f"127.0.0.1:{free_port()}"
    args = ragmesh_command("serve", "embeddings", "--listen", target, *extra_args)
    return running_process(args, log_path, env=env, target=target)


@pytest.fixture(scope="session")
def embeddings_server(session_tmp: Path) -> Iterator[ServerProcess]:
    """One embeddings server with default settings, SERVING."""
    with start_embeddings(session_tmp / "embeddings.log") as server:
        wait_serving(server.target, EMBEDDINGS_SERVICE, server)
        yield server
