"""The chaos suite: a mesh started with `ragmesh up`, steady traffic through Envoy, and
faults caused with real signals. Each scenario's recovery time is printed at the end.

The short scenarios (one SIGKILL each) run in `make test`; the long ones (a frozen replica
for 20 s, a frozen database for 30 s) only with RAGMESH_CHAOS_LONG=1, as `make chaos` sets.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from tests.chaos.traffic import COLLECTION, KINDS, Traffic
from tests.mesh import Mesh, running_mesh

# Scenario name → seconds until each kind of call succeeded again; printed at the end.
RECOVERY_S: dict[str, dict[str, float]] = {}
# The target (issue 9): traffic succeeds again within this long after each fault. Shown
# next to each measurement; the test fails only when traffic has not recovered by GIVE_UP_S.
RECOVERY_TARGET_S = 30.0
GIVE_UP_S = 180.0

LONG = os.environ.get("RAGMESH_CHAOS_LONG") == "1"
long_scenario = pytest.mark.skipif(not LONG, reason="long chaos scenario: `make chaos`")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RECOVERY_S:
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        terminalreporter.write_sep(
            "-",
            f"chaos: seconds until calls succeed again (target {RECOVERY_TARGET_S:.0f} s;"
            f" load average now {load})",
        )
        terminalreporter.write_line(
            f"{'scenario':<40} {'all':>6}" + "".join(f"{k:>7}" for k in KINDS)
        )
        for name, by_kind in RECOVERY_S.items():
            cells = "".join(f"{by_kind[kind]:7.1f}" for kind in KINDS)
            terminalreporter.write_line(f"{name:<40} {max(by_kind.values()):6.1f}{cells}")


@pytest.fixture(scope="module")
def chaos_mesh(request: pytest.FixtureRequest) -> Iterator[Mesh]:
    """The module's mesh; `CHAOS_REPLICAS` in the module sets `--replicas` arguments.

    Its state lives outside pytest's temporary root: restarted, PostgreSQL (an unprivileged
    user when run as root) must still reach its data directory, and another pytest run on
    the same machine resets that root to mode 0700."""
    replicas = getattr(request.module, "CHAOS_REPLICAS", [])
    up_args = [arg for value in replicas for arg in ("--replicas", value)]
    state_dir = Path(tempfile.mkdtemp(prefix="ragmesh-chaos-"))
    try:
        # Recovery does not depend on the model runtime; torch skips converting the model on
        # the mesh's first start (minutes on a busy 2-core machine).
        with running_mesh(state_dir, {"RAGMESH_EMBEDDINGS__RUNTIME": "torch"}, *up_args) as mesh:
            yield mesh
    finally:
        # RAGMESH_KEEP_CHAOS_STATE=1 keeps every process's log for a post-mortem.
        if os.environ.get("RAGMESH_KEEP_CHAOS_STATE") == "1":
            print(f"chaos mesh state kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
async def traffic(chaos_mesh: Mesh) -> AsyncIterator[Traffic]:
    async with chaos_mesh.channel() as channel:
        await search_grpc.SearchServiceStub(channel).CreateCollection(
            search_pb.CreateCollectionRequest(name=COLLECTION), timeout=60
        )
        load = Traffic(channel)
        load.start()
        started = time.monotonic()
        await load.wait_all_succeed(started, timeout_s=60)
        yield load
        await load.stop()
    unexpected = load.unexpected(started)
    assert not unexpected, (
        f"clients saw {unexpected[:5]}: {load.summary(started)};"
        f" errors the mesh logged: {logged_errors(chaos_mesh)}"
    )


def logged_errors(mesh: Mesh, limit: int = 5) -> list[str]:
    """The last ERROR lines of every process's log (an INTERNAL answer's traceback is logged
    under its error id), so a failure in CI says where it came from."""
    lines: list[str] = []
    for log in sorted((Path(mesh.state_dir) / "logs").glob("*.log")):
        text = log.read_text(errors="replace")
        errors = [line for line in text.splitlines() if '"level": "error"' in line]
        # The head names the call, the tail the exception (a traceback ends with it).
        lines += [
            f"{log.name}: {line if len(line) <= 2500 else line[:700] + ' ... ' + line[-1800:]}"
            for line in errors[-limit:]
        ]
    return lines


def postgres_processes(mesh: Mesh) -> list[psutil.Process]:
    """The postmaster (first) and every process it started."""
    pid_file = Path(mesh.state_dir) / "postgres" / "postmaster.pid"
    postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


async def read_every_acknowledged_write(mesh: Mesh, ids: list[str]) -> list[str]:
    """The acknowledged document ids that cannot be read back (should be none)."""
    missing: list[str] = []
    async with mesh.channel() as channel:
        search = search_grpc.SearchServiceStub(channel)
        limit = asyncio.Semaphore(8)

        async def read(doc_id: str) -> None:
            async with limit:
                try:
                    await search.GetDocument(
                        search_pb.GetDocumentRequest(collection=COLLECTION, id=doc_id), timeout=30
                    )
                except grpc.aio.AioRpcError as error:
                    missing.append(f"{doc_id}: {error.code().name}")

        await asyncio.gather(*(read(doc_id) for doc_id in ids))
    return missing
