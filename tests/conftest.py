"""Fixtures shared by every test depth."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The model and tokenizer load from local directories only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Servers started by the integration tests skip API keys, so each test can focus on its own
# subject; tests/integration/runtime/test_auth.py and the whole-mesh tests run with keys required.
os.environ.setdefault("RAGMESH_SERVER__REQUIRE_API_KEY", "false")
# Every embeddings server the tests start, whatever its state folder, shares one folder of
# converted models (issue 11): the model is converted once per checkout, not once per mesh.
os.environ.setdefault(
    "RAGMESH_EMBEDDINGS__RUNTIME_CACHE_DIR",
    str(Path(__file__).resolve().parent.parent / ".ragmesh" / "models"),
)
# Many servers run at once in the tests: no fixed metrics ports unless a test asks for one.
for _service in ("EMBEDDINGS", "SEARCH", "COORDINATOR"):
    os.environ.setdefault(f"RAGMESH_{_service}__METRICS_LISTEN", "")


@pytest.fixture(scope="session")
def reference_model():  # type: ignore[no-untyped-def]
    """The packaged model loaded in-process, the reference the server is compared with."""
    from sentence_transformers import SentenceTransformer

    from ragmeshd.models import packaged_model_path

    return SentenceTransformer(str(packaged_model_path()), device="cpu")


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("ragmesh")


# The shared mesh's servers take this many calls at once (server.max_concurrent_rpcs), few
# enough that a test can fill an embeddings replica (tests/e2e/test_retry_budget.py).
SHARED_MESH_MAX_CONCURRENT_RPCS = 32


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One whole mesh (`ragmesh up`, two embeddings replicas) shared by tests/e2e and
    tests/fuzz, started on first use."""
    from tests.mesh import running_mesh

    env = {"RAGMESH_SERVER__MAX_CONCURRENT_RPCS": str(SHARED_MESH_MAX_CONCURRENT_RPCS)}
    with running_mesh(tmp_path_factory.mktemp("mesh"), env, "--replicas", "embeddings=2") as m:
        yield m
