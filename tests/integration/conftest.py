"""Real server processes shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ragmeshd.embeddings.server import SERVICE_NAME as EMBEDDINGS_SERVICE
from tests.helpers import ServerProcess, start_embeddings, wait_serving


@pytest.fixture(scope="session")
def embeddings_server(session_tmp: Path) -> Iterator[ServerProcess]:
    """One embeddings server with default settings, SERVING."""
    with start_embeddings(session_tmp / "embeddings.log") as server:
        wait_serving(server.target, EMBEDDINGS_SERVICE, server)
        yield server
