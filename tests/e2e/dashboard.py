"""The Grafana dashboard's queries (docs/observability/grafana-dashboard.json), for the
observability test: after traffic, every panel's PromQL must return data from the real
Prometheus that scrapes the mesh."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from tests.helpers import REPO_ROOT

DASHBOARD = REPO_ROOT / "docs" / "observability" / "grafana-dashboard.json"
COLLECTION = "dashboard"
# Series that only a language-model backend produces; the shared test mesh has none (Ask
# answers with the retrieved context), so these queries are checked to run, not to have data.
NEEDS_LLM_BACKEND = ("ragmesh_coordinator_backend_seconds",)
DATA_TIMEOUT_S = 60.0


def panel_queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows included."""
    dashboard = json.loads(path.read_text())
    panels = list(dashboard["panels"])
    queries = []
    while panels:
        panel = panels.pop(0)
        panels += panel.get("panels", [])
        queries += [(panel["title"], target["expr"]) for target in panel.get("targets", [])]
    return queries


async def dashboard_traffic(channel: grpc.aio.Channel) -> None:
    """Calls that move every series the dashboard shows: embeddings, a refused call, a search
    in each mode, and an Ask."""
    embeddings = embeddings_grpc.EmbeddingsServiceStub(channel)
    await embeddings.Embed(embeddings_pb.EmbedRequest(inputs=["dashboard traffic"]))
    try:
        await embeddings.Embed(embeddings_pb.EmbedRequest(inputs=[]))
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    search = search_grpc.SearchServiceStub(channel)
    try:
        await search.CreateCollection(search_pb.CreateCollectionRequest(name=COLLECTION))
        document = search_pb.Document(id="1", text="Grafana panels query Prometheus.")
        await search.UpsertDocuments(
            search_pb.UpsertDocumentsRequest(collection=COLLECTION, documents=[document])
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    for mode in (
        search_pb.SEARCH_MODE_DENSE,
        search_pb.SEARCH_MODE_KEYWORD,
        search_pb.SEARCH_MODE_HYBRID,
    ):
        await search.Search(
            search_pb.SearchRequest(collection=COLLECTION, query="panels", mode=mode)
        )
    coordinator = coordinator_grpc.CoordinatorServiceStub(channel)
    async for _ in coordinator.Ask(
        coordinator_pb.AskRequest(query="what do panels query?", collections=[COLLECTION])
    ):
        pass


async def assert_every_panel_has_data(
    query: Callable[[str], Awaitable[dict]], traffic: Callable[[], Awaitable[None]]
) -> None:
    """Send traffic until every panel's query returns at least one series (rate() needs two
    scrapes inside its window), or fail naming the panels still empty."""
    pending = panel_queries()
    assert len(pending) >= 8, "the dashboard lost its panels"
    deadline = time.monotonic() + DATA_TIMEOUT_S
    while True:
        await traffic()
        still_empty = []
        for title, expr in pending:
            reply = await query(f"/api/v1/query?query={urllib.parse.quote(expr)}")
            assert reply["status"] == "success", (title, expr, reply)
            if not reply["data"]["result"] and not any(n in expr for n in NEEDS_LLM_BACKEND):
                still_empty.append((title, expr))
        if not still_empty:
            return
        assert time.monotonic() < deadline, f"panels without data: {still_empty}"
        pending = still_empty
        await asyncio.sleep(1.0)
