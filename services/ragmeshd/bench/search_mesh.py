"""What `ragmesh bench search` measures besides queries/s: when the search replica's keyword
index is ready after ingestion, and which process used how much CPU while a mode ran (the
load generator shares the machine's cores with Envoy, the search server and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd.bench.embed_mesh import machine_busy_s
from ragmeshd.bench.mesh import cpu_seconds

# A keyword query answered faster than this came from the replica's in-memory index (the SQL
# planner takes hundreds of milliseconds at 100,000 passages).
INDEX_READY_MS = 50.0
INDEX_WAIT_S = 120.0
INDEX_BUILT = '"event": "keyword index built"'


@dataclass
class KeywordWarmup:
    first_ms: float
    ready_after_s: float | None

    def line(self) -> str:
        ready = (
            f"ready after {self.ready_after_s:.1f} s"
            if self.ready_after_s is not None
            else f"not ready after {INDEX_WAIT_S:.0f} s"
        )
        return f"keyword index: first query {self.first_ms:.0f} ms, {ready}"


async def warm_keyword_index(
    stub: pb_grpc.SearchServiceStub, requests: list[pb.SearchRequest], log: Path | None
) -> KeywordWarmup:
    """Keyword queries one at a time (each a different one) until the replica's index is
    ready: the first starts its build, the SQL planner answers until then. With the search
    server's log (a mesh started here), ready is its "keyword index built" line; without,
    a query answered in under INDEX_READY_MS (the SQL planner can be that fast on rare
    words, so this may report too early)."""
    # A reused state folder's log holds earlier runs' lines: only what is written from now on.
    offset = await asyncio.to_thread(_size, log) if log is not None else 0
    started = time.perf_counter()
    first_ms = 0.0
    for attempt in range(10**6):
        call_started = time.perf_counter()
        await stub.Search(requests[attempt % len(requests)], timeout=60)
        elapsed_ms = (time.perf_counter() - call_started) * 1000
        if attempt == 0:
            first_ms = elapsed_ms
        if log is not None:
            if await asyncio.to_thread(_logged, log, offset):
                return KeywordWarmup(first_ms, time.perf_counter() - started)
        elif attempt > 0 and elapsed_ms < INDEX_READY_MS:
            return KeywordWarmup(first_ms, time.perf_counter() - started)
        if time.perf_counter() - started > INDEX_WAIT_S:
            break
        await asyncio.sleep(0.2)
    return KeywordWarmup(first_ms, None)


def _size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def _logged(log: Path, offset: int) -> bool:
    if not log.exists():
        return False
    with log.open("rb") as lines:
        lines.seek(offset)
        return INDEX_BUILT.encode() in lines.read()


@dataclass
class ProcessCpu:
    """CPU cores used by the mesh's processes (by name), this process and the rest."""

    pids: dict[str, int]
    _before: dict[str, float] = field(default_factory=dict)

    def _now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        now["load generator (this process)"] = sum(os.times()[:2])
        now["machine"] = machine_busy_s()
        return now

    def start(self) -> None:
        self._before = self._now()

    def cores(self, elapsed_s: float) -> dict[str, float]:
        after = self._now()
        used = {name: (after[name] - self._before[name]) / elapsed_s for name in after}
        machine = used.pop("machine")
        shown = {name: value for name, value in used.items() if value >= 0.01}
        shown["anything else (other users too)"] = max(0.0, machine - sum(used.values()))
        return shown
