"""SIGKILL the llm service under Ask traffic through Envoy: while it is gone (and while
`ragmesh up` starts it again and it warms up), Ask degrades to the context-only answer, never
an error; once it is back, the local model answers again."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import grpc
import pytest

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as pb_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from tests.chaos.conftest import GIVE_UP_S
from tests.helpers import eventually_async
from tests.mesh import Mesh

pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.e2e, pytest.mark.long]

COLLECTION = "llm-chaos"
QUESTION = pb.AskRequest(
    query="How old is the Hook Head lighthouse?",
    collections=[COLLECTION],
    force=pb.DECISION_LOCAL,
    max_answer_tokens=24,
)


async def _ask(client: pb_grpc.CoordinatorServiceStub) -> int:
    """The side that answered; an RPC error propagates."""
    answered = pb.DECISION_UNSPECIFIED
    async for response in client.Ask(QUESTION, timeout=120):
        if response.HasField("summary"):
            answered = response.summary.answered_by
    return answered


async def test_killed_llm_degrades_ask_to_the_context_then_recovers(chaos_mesh: Mesh) -> None:
    async with chaos_mesh.channel() as channel:
        search = search_grpc.SearchServiceStub(channel)
        await search.CreateCollection(
            search_pb.CreateCollectionRequest(name=COLLECTION), timeout=60
        )
        await search.UpsertDocuments(
            search_pb.UpsertDocumentsRequest(
                collection=COLLECTION,
                documents=[
                    search_pb.Document(
                        id="lighthouse", text="Hook Head lighthouse was built in the 12th century."
                    )
                ],
            ),
            timeout=60,
        )
        client = pb_grpc.CoordinatorServiceStub(channel)
        assert await _ask(client) == pb.DECISION_LOCAL
        before = chaos_mesh.state.restarts.get("llm-0", 0)
        answers: list[int] = []
        errors: list[str] = []
        stop = asyncio.Event()

        async def traffic() -> None:
            while not stop.is_set():
                try:
                    answers.append(await _ask(client))
                except grpc.aio.AioRpcError as exc:
                    errors.append(f"{exc.code().name}: {exc.details()}")

        workers = [asyncio.ensure_future(traffic()) for _ in range(2)]
        os.kill(chaos_mesh.state.pids["llm-0"], signal.SIGKILL)
        killed_at = time.monotonic()
        await eventually_async(
            lambda: chaos_mesh.state.restarts.get("llm-0", 0) > before, GIVE_UP_S, "restarted"
        )
        # Back: the local model answers again.
        while await _ask(client) != pb.DECISION_LOCAL:
            assert time.monotonic() - killed_at < GIVE_UP_S, "the local model never came back"
        stop.set()
        await asyncio.gather(*workers)
    print(
        f"chaos SIGKILL llm-0: {len(answers)} Asks during the outage and recovery,"
        f" {answers.count(pb.DECISION_NONE)} answered with the context only"
    )
    assert not errors, errors[:5]
    assert set(answers) <= {pb.DECISION_LOCAL, pb.DECISION_NONE}
