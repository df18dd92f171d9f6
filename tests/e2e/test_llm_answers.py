"""The whole path of issue 22 through Envoy: `ragmesh up` starts the llm service (the packaged
SmolLM2-135M) in dependency order, the coordinator's LOCAL route calls it through Envoy, and
`ragmesh ask --json` prints a generated answer with its sources."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as pb_grpc
from ragmesh.llm.v1 import llm_service_pb2 as llm_pb
from ragmesh.llm.v1 import llm_service_pb2_grpc as llm_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from tests.helpers import ragmesh_command
from tests.mesh import Mesh, running_mesh

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.e2e

COLLECTION = "notes"
TEXT = (
    "The Hook Head lighthouse in County Wexford, Ireland, was built in the 12th century and is"
    " one of the oldest working lighthouses in the world."
)


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    state_dir = Path(tempfile.mkdtemp(prefix="ragmesh-llm-e2e-"))
    env = {
        "RAGMESH_EMBEDDINGS__RUNTIME": "torch",
        "RAGMESH_COORDINATOR__CONFIDENCE_THRESHOLD": "0.2",
    }
    with running_mesh(state_dir, env) as running:
        yield running


async def test_llm_is_a_supervised_replica_behind_envoy(mesh: Mesh) -> None:
    assert "llm-0" in mesh.state.pids
    async with mesh.channel() as channel:
        info = await llm_grpc.LlmServiceStub(channel).Info(llm_pb.InfoRequest(), timeout=30)
    assert info.ready
    assert info.model == "SmolLM2-135M-Instruct.Q4_1"


async def test_ask_is_answered_by_the_local_model_with_its_sources(mesh: Mesh) -> None:
    async with mesh.channel() as channel:
        search = search_grpc.SearchServiceStub(channel)
        await search.CreateCollection(
            search_pb.CreateCollectionRequest(name=COLLECTION), timeout=60
        )
        await search.UpsertDocuments(
            search_pb.UpsertDocumentsRequest(
                collection=COLLECTION, documents=[search_pb.Document(id="lighthouse.md", text=TEXT)]
            ),
            timeout=60,
        )
        answer, summary, sources = "", None, None
        request = pb.AskRequest(
            query="How old is the Hook Head lighthouse?",
            collections=[COLLECTION],
            force=pb.DECISION_LOCAL,
            max_answer_tokens=48,
        )
        async for response in pb_grpc.CoordinatorServiceStub(channel).Ask(request, timeout=180):
            if response.HasField("summary"):
                summary = response.summary
            elif response.HasField("sources"):
                sources = response.sources
            else:
                answer += response.chunk.text
    assert summary is not None
    assert summary.answered_by == pb.DECISION_LOCAL, summary
    assert summary.model == "SmolLM2-135M-Instruct.Q4_1"
    assert answer.strip()
    assert [p.document_id for p in summary.passages] == ["lighthouse.md"]
    assert sources is not None
    assert [(s.number, s.source) for s in sources.sources] == [(1, "lighthouse.md")]


def test_ragmesh_ask_json_prints_answer_route_and_sources(mesh: Mesh) -> None:
    result = subprocess.run(
        ragmesh_command(
            "--state-dir", str(mesh.state_dir), "ask", "How old is the Hook Head lighthouse?",
            "--collection", COLLECTION, "--max-answer-tokens", "32", "--json",
        ),
        capture_output=True, text=True, timeout=240,
        env={**os.environ, **mesh.env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["answer"].strip()
    assert printed["route"] in ("LOCAL", "NONE")
    assert printed["sources"][0]["source"] == "lighthouse.md"


async def test_a_limited_keys_answer_stops_when_its_tokens_run_out(mesh: Mesh) -> None:
    """Issue 23: a key's rate counts generated tokens, charged as they stream; a key with a
    burst of 4 units (the call's search is 1) gets at most 3 chunks, then RESOURCE_EXHAUSTED
    (after test_ask_is_answered_by_the_local_model_with_its_sources stored the passage)."""
    created = await asyncio.to_thread(
        subprocess.run,
        ragmesh_command(
            "keys", "create", "few-tokens", "--scopes", "ask", "--rate", "1/m", "--burst", "4"
        ),
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, **mesh.env},
    )  # fmt: skip
    key = created.stdout.strip()
    await asyncio.sleep(1.5)  # the servers and the rate-limit service re-read the key store
    request = pb.AskRequest(
        query="How old is the Hook Head lighthouse?",
        collections=[COLLECTION],
        force=pb.DECISION_LOCAL,
        max_answer_tokens=48,
    )
    chunks = 0
    async with grpc.aio.secure_channel(mesh.endpoint, mesh.client_credentials()) as channel:
        stub = pb_grpc.CoordinatorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as stopped:
            async for response in stub.Ask(request, metadata=[("x-api-key", key)], timeout=180):
                chunks += response.HasField("chunk")
    assert stopped.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, stopped.value.details()
    assert "rate limit is spent" in (stopped.value.details() or "")
    assert chunks == 3
