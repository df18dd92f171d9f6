"""Tenancy as an attacker sees it, through Envoy on the shared mesh (issue 24): a key of tenant
A (`--collections 'team-a-*'`) tries to reach tenant B's passages through every way in
(Search, Ask with the coordinator searching on its behalf, /v1/chat/completions, UploadFiles,
ListDocuments, interactions export), and a key outside a document's groups tries to see it in
every mode, with top-k still full (the filter runs before top-k, not after)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.api.httpbody_pb2 import HttpBody

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from ragmeshd.runtime.channels import metadata_interceptors
from tests.helpers import REPO_ROOT, eventually_async, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

TEAM_A = "team-a-tenancy"
TEAM_B = "team-b-tenancy"
SECRET = "SECRET-B-7731"
B_TEXT = f"The zebra migration ledger of tenant B holds {SECRET} for the auditors."
QUERY = "quarterly payroll budget salaries"
RESTRICTED = "finance,board"
TOP_K = 5
MODES = ["SEARCH_MODE_DENSE", "SEARCH_MODE_KEYWORD", "SEARCH_MODE_HYBRID"]
TENANT_SCOPES = "embed,search.read,search.write,ask,interactions.read,interactions.export"
CHAT_MODEL = "ragmesh-rag"
RELOAD_WAIT_S = 1.5  # servers re-read the key store within a second


@dataclass(frozen=True)
class Keys:
    tenant_a: str  # team-a-* only, no groups
    finance_a: str  # team-a-*, group finance
    tenant_b: str  # team-b-* only


def _create_key(mesh: Mesh, name: str, *args: str) -> str:
    created = subprocess.run(
        ragmesh_command("keys", "create", name, "--expires", "1d", *args),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def _http(mesh: Mesh, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=mesh.base_url,
        verify=mesh.ssl_context(),
        headers={"authorization": f"Bearer {key}"},
        timeout=60,
    )


def _restricted_id(i: int) -> str:
    return f"fin-{i:02d}"


@pytest.fixture(scope="module")
def keys(mesh: Mesh) -> Keys:
    """team-a-tenancy: 10 finance-only documents that match QUERY best and 10 open ones;
    team-b-tenancy: tenant B's secret. Made with the admin key over HTTP/JSON."""
    with _http(mesh, mesh.api_key) as http:
        for name in (TEAM_A, TEAM_B):
            http.post("/v1/collections", json={"name": name}).raise_for_status()
        documents: list[dict[str, Any]] = []
        for i in range(10):
            documents.append(
                {
                    "id": _restricted_id(i),
                    "text": f"{QUERY} {QUERY} salaries of the board, restricted note {i}.",
                    "metadata": {"acl": {"stringValue": RESTRICTED}},
                }
            )
            documents.append(
                {"id": f"open-{i:02d}", "text": f"Payroll budget note {i} about salaries."}
            )
        upsert = f"/v1/collections/{TEAM_A}/documents:upsert"
        http.post(upsert, json={"documents": documents}).raise_for_status()
        b_document = {"id": "zebra", "text": B_TEXT}
        upsert_b = f"/v1/collections/{TEAM_B}/documents:upsert"
        http.post(upsert_b, json={"documents": [b_document]}).raise_for_status()
    made = Keys(
        tenant_a=_create_key(
            mesh, "tenant-a", "--collections", "team-a-*", "--scopes", TENANT_SCOPES
        ),
        finance_a=_create_key(
            mesh, "finance-a", "--collections", "team-a-*", "--groups", "finance"
        ),
        tenant_b=_create_key(
            mesh, "tenant-b", "--collections", "team-b-*", "--scopes", TENANT_SCOPES
        ),
    )
    time.sleep(RELOAD_WAIT_S)
    return made


@pytest.fixture
def channel_for(mesh: Mesh) -> Iterator[Any]:
    def make(key: str) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            mesh.endpoint, mesh.client_credentials(), interceptors=metadata_interceptors(key)
        )

    yield make


async def _ask(channel: grpc.aio.Channel, **fields: Any) -> list[coordinator_pb.AskResponse]:
    stub = coordinator_grpc.CoordinatorServiceStub(channel)
    return [m async for m in stub.Ask(coordinator_pb.AskRequest(**fields), timeout=60)]


def _sources(messages: list[coordinator_pb.AskResponse]) -> list[coordinator_pb.Source]:
    return [s for m in messages if m.HasField("sources") for s in m.sources.sources]


async def test_tenant_a_never_sees_tenant_b_through_search_or_ask(
    mesh: Mesh, keys: Keys, channel_for: Any
) -> None:
    async with channel_for(keys.tenant_a) as channel:
        search = search_grpc.SearchServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await search.Search(
                search_pb.SearchRequest(collection=TEAM_B, query="zebra ledger"), timeout=30
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert TEAM_B in (denied.value.details() or "")
        listed = await search.ListCollections(search_pb.ListCollectionsRequest(), timeout=30)
        names = {c.name for c in listed.collections}
        assert TEAM_A in names and TEAM_B not in names
        assert all(name.startswith("team-a-") for name in names)

        # Ask naming B's collection: the coordinator searches with A's authority.
        with pytest.raises(grpc.aio.AioRpcError) as asked:
            await _ask(channel, query="zebra migration ledger", collections=[TEAM_B])
        assert asked.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert SECRET not in (asked.value.details() or "")
        # Ask naming no collection searches A's collections only.
        messages = await _ask(channel, query="zebra migration ledger auditors")
    assert messages and messages[-1].HasField("summary")
    assert SECRET not in str(messages)
    assert all(s.collection != TEAM_B for s in _sources(messages))


def test_tenant_a_never_sees_tenant_b_through_chat_completions(mesh: Mesh, keys: Keys) -> None:
    question = [{"role": "user", "content": "What does the zebra migration ledger hold?"}]
    with _http(mesh, keys.tenant_a) as http:
        named = http.post(
            "/v1/chat/completions",
            json={"model": CHAT_MODEL, "messages": question, "ragmesh": {"collections": [TEAM_B]}},
        )
        unnamed = http.post(
            "/v1/chat/completions", json={"model": CHAT_MODEL, "messages": question}
        )
    assert named.status_code == 403, named.text
    assert SECRET not in named.text
    assert unnamed.status_code == 200, unnamed.text
    assert SECRET not in unnamed.text and TEAM_B not in unnamed.text


async def test_tenant_a_cannot_upload_into_or_list_tenant_b(
    mesh: Mesh, keys: Keys, channel_for: Any
) -> None:
    upload = search_pb.UploadFilesRequest(
        collection=TEAM_B, file_name="planted.md", chunk=HttpBody(data=b"# Planted\n\nby A")
    )
    async with channel_for(keys.tenant_a) as channel:
        search = search_grpc.SearchServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as uploaded:
            await search.UploadFiles(iter([upload]), timeout=60)
        assert uploaded.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as listed:
            await search.ListDocuments(
                search_pb.ListDocumentsRequest(collection=TEAM_B), timeout=30
            )
        assert listed.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Within its own collections the same key uploads and lists.
        own = search_pb.UploadFilesRequest(
            collection=TEAM_A, file_name="own.md", chunk=HttpBody(data=b"# Own\n\nA's file")
        )
        assert (await search.UploadFiles(iter([own]), timeout=60)).files
        mine = await search.ListDocuments(
            search_pb.ListDocumentsRequest(collection=TEAM_A, page_size=100), timeout=30
        )
    ids = {d.id for d in mine.documents}
    assert not any(i.startswith("fin-") for i in ids), "restricted documents were listed"
    assert any(i.startswith("open-") for i in ids)
    async with mesh.channel() as admin:
        b_docs = await search_grpc.SearchServiceStub(admin).ListDocuments(
            search_pb.ListDocumentsRequest(collection=TEAM_B, page_size=100), timeout=30
        )
    assert [d.id for d in b_docs.documents] == ["zebra"]


async def _exported(channel: grpc.aio.Channel) -> list[coordinator_pb.Interaction]:
    stub = coordinator_grpc.CoordinatorServiceStub(channel)
    request = coordinator_pb.ExportInteractionsRequest()
    return [m.interaction async for m in stub.ExportInteractions(request, timeout=60)]


async def test_interactions_export_keeps_to_the_exporters_collections(
    mesh: Mesh, keys: Keys, channel_for: Any
) -> None:
    async with channel_for(keys.tenant_b) as channel:
        messages = await _ask(channel, query="zebra migration ledger auditors")
    b_id = messages[-1].summary.interaction_id
    assert SECRET in str(messages)  # B reads its own collection
    async with mesh.channel() as admin:

        async def exported_to_admin() -> bool:  # the interaction is stored after the answer
            return any(i.interaction_id == b_id for i in await _exported(admin))

        await eventually_async(
            exported_to_admin, 30, "tenant B's interaction exported to the admin key", 0.5
        )
    async with channel_for(keys.tenant_a) as channel:
        exported = await _exported(channel)
        with pytest.raises(grpc.aio.AioRpcError) as read:
            await coordinator_grpc.CoordinatorServiceStub(channel).GetInteraction(
                coordinator_pb.GetInteractionRequest(interaction_id=b_id), timeout=30
            )
    assert read.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert all(i.interaction_id != b_id for i in exported)
    assert SECRET not in str(exported)
    assert all(TEAM_B not in i.collections for i in exported)


@pytest.mark.parametrize("mode", MODES)
async def test_a_group_restricted_document_never_appears_outside_its_group(
    mesh: Mesh, keys: Keys, channel_for: Any, mode: str
) -> None:
    request = search_pb.SearchRequest(
        collection=TEAM_A, query=QUERY, top_k=TOP_K, mode=search_pb.SearchMode.Value(mode)
    )
    async with channel_for(keys.finance_a) as channel:
        inside = await search_grpc.SearchServiceStub(channel).Search(request, timeout=30)
    # The finance key sees the restricted documents near the top: they match best, so a
    # filter after top-k would leave the outsider's top-k short.
    assert inside.hits[0].document_id.startswith("fin-")
    assert sum(h.document_id.startswith("fin-") for h in inside.hits) >= TOP_K // 2 + 1
    async with channel_for(keys.tenant_a) as channel:
        outside = await search_grpc.SearchServiceStub(channel).Search(request, timeout=30)
        messages = await _ask(
            channel,
            query=QUERY,
            collections=[TEAM_A],
            top_k=TOP_K,
            mode=search_pb.SearchMode.Value(mode),
        )
    ids = [h.document_id for h in outside.hits]
    assert len(ids) == TOP_K, ids  # filtered before top-k: still full
    assert not any(i.startswith("fin-") for i in ids), ids
    assert "restricted note" not in str(outside)
    sources = _sources(messages)
    assert sources and not any(s.document_id.startswith("fin-") for s in sources)
    assert "restricted note" not in str(messages)


def test_chat_completions_keep_to_the_callers_groups(mesh: Mesh, keys: Keys) -> None:
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": QUERY}],
        "ragmesh": {"collections": [TEAM_A], "top_k": TOP_K},
    }
    with _http(mesh, keys.tenant_a) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    sources = response.json()["ragmesh"]["sources"]
    assert len(sources) == TOP_K
    assert not any(s["document_id"].startswith("fin-") for s in sources)
    assert "restricted note" not in response.text
