"""Real processes for the coordinator tests, shared by the session: one embedded
PostgreSQL, a search server on it (pgvector), coordinator servers in three configurations,
and the deterministic chat-completions doubles they call (fake_llm.py).

Coordinators:
  coordinator       local + remote backends, short timeouts, breakers that never open in
                    practice (50 failures), the confidence threshold in a config file;
  breaker_coordinator  the same backends with the default breaker thresholds (local 3,
                    remote 5) and a 2 s recovery, for the breaker tests alone;
  bare_coordinator  no backends at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from ragmeshd.coordinator.server import SERVICE_NAME as COORDINATOR_SERVICE
from ragmeshd.postgres.embedded import EmbeddedPostgres
from tests.helpers import (
    ServerProcess,
    free_port,
    ragmesh_command,
    run_coroutine,
    running_process,
    wait_postgres,
    wait_serving,
)
from tests.integration.coordinator.fake_llm import FakeLLM

SEARCH_SERVICE = "ragmesh.search.v1.SearchService"
DOCS = "coord-docs"
VECTORS_ONLY = "coord-vectors"
# The documents of DOCS: distinct topics, so a query copied from one is confident (dense
# similarity about 1) and an unrelated one is not.
DOCUMENTS = {
    "cats": "Domestic cats purr when they are content and knead soft blankets with their paws.",
    "volcano": "Basaltic volcanoes erupt runny lava that flows for kilometres before cooling.",
    "bread": "Sourdough bread rises because wild yeast and lactobacilli ferment the dough.",
    "tides": "Ocean tides are caused mainly by the gravitational pull of the Moon on Earth.",
    "chess": "In chess, castling moves the king two squares towards a rook, which jumps over.",
    "long": " ".join(
        f"Sentence {i} of a long document about lighthouses, fog signals and coastal"
        " navigation in stormy northern seas."
        for i in range(40)
    ),
}
THRESHOLD = 0.7


@dataclass
class Coordinator:
    process: ServerProcess
    local: FakeLLM | None
    remote: FakeLLM | None
    config_file: Path | None = None

    @property
    def target(self) -> str:
        return self.process.target


@pytest.fixture(scope="session")
def coordinator_pg_state(session_tmp: Path) -> Iterator[Path]:
    """An embedded PostgreSQL of its own, found through its state directory."""
    state_dir = session_tmp / "coordinator-pg"
    with running_process(
        ragmesh_command("serve", "postgres"),
        session_tmp / "coordinator-postgres.log",
        env={"RAGMESH_STATE_DIR": str(state_dir)},
    ) as process:
        wait_postgres(EmbeddedPostgres(state_dir).dsn(), process)
        yield state_dir


@pytest.fixture(scope="session")
def coordinator_search(
    session_tmp: Path, coordinator_pg_state: Path, embeddings_server: ServerProcess
) -> Iterator[ServerProcess]:
    """A search server (pgvector) holding the DOCS collection."""
    target = f"127.0.0.1:{free_port()}"
    argv = ragmesh_command(
        "serve", "search", "--listen", target, "--embeddings-target", embeddings_server.target
    )
    env = {"RAGMESH_STATE_DIR": str(coordinator_pg_state)}
    with running_process(
        argv, session_tmp / "coordinator-search.log", env=env, target=target
    ) as server:
        wait_serving(target, SEARCH_SERVICE, server)

        async def load() -> None:
            async with grpc.aio.insecure_channel(target) as channel:
                stub = search_grpc.SearchServiceStub(channel)
                await stub.CreateCollection(search_pb.CreateCollectionRequest(name=DOCS))
                await stub.UpsertDocuments(
                    search_pb.UpsertDocumentsRequest(
                        collection=DOCS,
                        documents=[
                            search_pb.Document(id=doc_id, text=text)
                            for doc_id, text in DOCUMENTS.items()
                        ],
                    ),
                    timeout=60,
                )
                # Vectors of another model: a text query cannot search it, so augmentation
                # over every collection must skip it.
                await stub.CreateCollection(
                    search_pb.CreateCollectionRequest(name=VECTORS_ONLY, dimensions=3)
                )
                await stub.UpsertDocuments(
                    search_pb.UpsertDocumentsRequest(
                        collection=VECTORS_ONLY,
                        documents=[search_pb.Document(id="v", text="three", vector=[1, 0, 0])],
                    )
                )

        run_coroutine(load)
        yield server


@pytest.fixture(scope="session")
def fake_local() -> Iterator[FakeLLM]:
    fake = FakeLLM("local")
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def fake_remote() -> Iterator[FakeLLM]:
    fake = FakeLLM("remote")
    yield fake
    fake.close()


@contextmanager
def _start_coordinator(
    name: str,
    session_tmp: Path,
    pg_state: Path,
    search: ServerProcess,
    env: dict[str, str],
    *args: str,
) -> Iterator[ServerProcess]:
    target = f"127.0.0.1:{free_port()}"
    argv = ragmesh_command(
        "serve", "coordinator", "--listen", target, "--search-target", search.target, *args
    )
    base_env = {
        "RAGMESH_STATE_DIR": str(pg_state),
        "RAGMESH_COORDINATOR__BACKEND_IDLE_TIMEOUT_S": "1",
        "RAGMESH_COORDINATOR__BACKEND_CONNECT_TIMEOUT_S": "1",
        "RAGMESH_COORDINATOR__HEALTH_CACHE_S": "0.2",
        "RAGMESH_COORDINATOR__CONFIG_CHECK_INTERVAL_S": "0.2",
    }
    with running_process(
        argv, session_tmp / f"{name}.log", env={**base_env, **env}, target=target
    ) as server:
        wait_serving(target, COORDINATOR_SERVICE, server)
        yield server


@pytest.fixture(scope="session")
def coordinator(
    session_tmp: Path,
    coordinator_pg_state: Path,
    coordinator_search: ServerProcess,
    fake_local: FakeLLM,
    fake_remote: FakeLLM,
) -> Iterator[Coordinator]:
    config_file = session_tmp / "coordinator.toml"
    config_file.write_text(f"[coordinator]\nconfidence_threshold = {THRESHOLD}\n")
    env = {
        "RAGMESH_CONFIG_FILE": str(config_file),
        "RAGMESH_COORDINATOR__LOCAL_BREAKER_FAILURES": "50",
        "RAGMESH_COORDINATOR__REMOTE_BREAKER_FAILURES": "50",
    }
    with _start_coordinator(
        "coordinator",
        session_tmp,
        coordinator_pg_state,
        coordinator_search,
        env,
        "--local-url",
        fake_local.url,
        "--local-model",
        "tiny-local",
        "--remote-url",
        fake_remote.url,
        "--remote-model",
        "big-remote",
    ) as process:
        yield Coordinator(process, fake_local, fake_remote, config_file)


@pytest.fixture(scope="session")
def breaker_coordinator(
    session_tmp: Path,
    coordinator_pg_state: Path,
    coordinator_search: ServerProcess,
) -> Iterator[Coordinator]:
    local, remote = FakeLLM("local"), FakeLLM("remote")
    try:
        with _start_coordinator(
            "breaker-coordinator",
            session_tmp,
            coordinator_pg_state,
            coordinator_search,
            {"RAGMESH_COORDINATOR__BREAKER_RECOVERY_S": "2"},
            "--local-url",
            local.url,
            "--remote-url",
            remote.url,
        ) as process:
            yield Coordinator(process, local, remote)
    finally:
        local.close()
        remote.close()


@pytest.fixture(scope="session")
def bare_coordinator(
    session_tmp: Path, coordinator_pg_state: Path, coordinator_search: ServerProcess
) -> Iterator[Coordinator]:
    with _start_coordinator(
        "bare-coordinator", session_tmp, coordinator_pg_state, coordinator_search, {}
    ) as process:
        yield Coordinator(process, None, None)


@pytest.fixture(autouse=True)
def _fresh_fakes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with well-behaved doubles."""
    fakes = [
        request.getfixturevalue(name)
        for name in ("fake_local", "fake_remote")
        if name in request.fixturenames
    ]
    for fake in fakes:
        fake.reset()
    yield
    for fake in fakes:
        fake.reset()
