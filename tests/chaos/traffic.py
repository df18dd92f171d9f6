"""Steady client traffic through Envoy for the chaos tests, and what it saw.

A few workers per kind of call (embeds, document writes, coordinator queries) call back to
back through Envoy with mTLS and a key, and record every answer's status code and time.
Each write puts a new document; the ids of the acknowledged ones are kept so a test can
check afterwards that none was lost.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc

COLLECTION = "chaos"
# Long enough that a call stuck on a frozen replica is retried elsewhere by Envoy (its
# per-try timeout is shorter) instead of failing.
CALL_DEADLINE_S = 30.0
# Status codes a client may see while a part of the mesh is down; never INTERNAL or UNKNOWN.
OUTAGE_CODES = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
KINDS = ("embed", "write", "query")


@dataclass(frozen=True)
class Answer:
    kind: str
    started: float
    finished: float
    code: str
    details: str = ""


@dataclass
class Traffic:
    channel: grpc.aio.Channel
    workers_per_kind: int = 2
    answers: list[Answer] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        embeddings = embeddings_grpc.EmbeddingsServiceStub(self.channel)
        search = search_grpc.SearchServiceStub(self.channel)
        coordinator = coordinator_grpc.CoordinatorServiceStub(self.channel)

        async def embed() -> None:
            await embeddings.Embed(
                embeddings_pb.EmbedRequest(inputs=["a steady embed call"]),
                timeout=CALL_DEADLINE_S,
            )

        async def write() -> None:
            doc_id = f"doc-{next(self._ids)}"
            await search.UpsertDocuments(
                search_pb.UpsertDocumentsRequest(
                    collection=COLLECTION,
                    documents=[search_pb.Document(id=doc_id, text=f"chaos document {doc_id}")],
                ),
                timeout=CALL_DEADLINE_S,
            )
            self.acknowledged.append(doc_id)

        async def query() -> None:
            await coordinator.AugmentQuery(
                coordinator_pb.AugmentQueryRequest(
                    query="chaos document", collections=[COLLECTION]
                ),
                timeout=CALL_DEADLINE_S,
            )

        for kind, call in (("embed", embed), ("write", write), ("query", query)):
            for _ in range(self.workers_per_kind):
                self._tasks.append(asyncio.ensure_future(self._worker(kind, call)))

    async def _worker(self, kind: str, call: Callable[[], Awaitable[None]]) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            code, details = "OK", ""
            try:
                await call()
            except grpc.aio.AioRpcError as error:
                code, details = error.code().name, error.details() or ""
            self.answers.append(Answer(kind, started, time.monotonic(), code, details))
            # A short pause keeps 2 cores for the mesh; after a failure, as a client backs off.
            await asyncio.sleep(0.05 if code == "OK" else 0.2)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def since(self, moment: float) -> list[Answer]:
        return [answer for answer in self.answers if answer.started >= moment]

    async def wait_all_succeed(
        self, after: float, timeout_s: float, kinds: tuple[str, ...] = KINDS
    ) -> dict[str, float]:
        """Wait until every kind has answered OK twice in a row after its last failure
        since `after`; per kind, the seconds from `after` until the first of those OKs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            recovered = {kind: _recovered_at(self.since(after), kind) for kind in kinds}
            if all(moment is not None for moment in recovered.values()):
                return {kind: moment - after for kind, moment in recovered.items()}  # type: ignore[operator]
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"traffic did not recover within {timeout_s:.0f} s: {self.summary(after)}"
        )

    def unexpected(self, after: float) -> list[str]:
        """Each answer since `after` that no outage explains, with its kind and message."""
        return [
            f"{a.kind} {a.code} at +{a.started - after:.1f} s: {a.details}"
            for a in self.since(after)
            if a.code != "OK" and a.code not in OUTAGE_CODES
        ]

    def summary(self, after: float) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        for answer in self.since(after):
            counts[answer.kind][answer.code] = counts[answer.kind].get(answer.code, 0) + 1
        return counts


def _recovered_at(answers: list[Answer], kind: str) -> float | None:
    """When the first of two consecutive OKs after the kind's last failure finished."""
    mine = sorted((a for a in answers if a.kind == kind), key=lambda a: a.finished)
    last_failure = max((i for i, a in enumerate(mine) if a.code != "OK"), default=-1)
    after = mine[last_failure + 1 :]
    if len(after) < 2:
        return None
    return after[0].finished
