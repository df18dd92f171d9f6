"""Every RPC as HTTP/JSON on Envoy's client listener (the gRPC-JSON transcoder), over HTTP/1.1
with the client certificate and the API key, and errors as HTTP statuses with the gRPC
status in the body."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ragmeshd.runtime.api import API_FILES
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def http(mesh: Mesh) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {mesh.api_key}"}
    with httpx.Client(
        base_url=mesh.base_url, verify=mesh.ssl_context(), headers=headers, timeout=60
    ) as client:
        yield client


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.http_version == "HTTP/1.1"
    return response.json()


def test_every_rpc_has_an_http_rule() -> None:
    from google.api import annotations_pb2

    for file in API_FILES:
        for service in file.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                assert rule.WhichOneof("pattern"), f"{method.full_name} has no google.api.http"


def test_every_rpc_through_the_transcoder(http: httpx.Client) -> None:
    """One workflow that calls each RPC of the API once over HTTP/JSON."""
    calls: set[str] = set()

    def post(path: str, body: object, rpc: str) -> Any:
        calls.add(rpc)
        return _ok(http.post(path, json=body))

    def get(path: str, rpc: str) -> Any:
        calls.add(rpc)
        return _ok(http.get(path))

    info = get("/v1/embeddings:info", "Info")
    assert info["model"] == "all-MiniLM-L6-v2" and info["dimensions"] == 384
    embedded = post("/v1/embeddings:embed", {"inputs": ["hello mesh"]}, "Embed")
    assert len(embedded["embeddings"][0]["values"]) == 384
    # A client stream is a JSON array of request messages; a server stream, one of responses.
    streamed = post(
        "/v1/embeddings:embedStream",
        [{"sequence": 1, "inputs": ["a"]}, {"sequence": 2, "inputs": ["b", "c"]}],
        "EmbedStream",
    )
    assert [len(m["embeddings"]) for m in streamed] == [1, 2]

    post("/v1/collections", {"name": "http-json"}, "CreateCollection")
    names = [c["name"] for c in get("/v1/collections", "ListCollections")["collections"]]
    assert "http-json" in names
    en = {"stringValue": "en"}
    documents = [
        {"id": "1", "text": "Envoy retries idempotent calls.", "metadata": {"lang": en}},
        {"id": "2", "text": "PostgreSQL stores the vectors."},
    ]
    upserted = post(
        "/v1/collections/http-json/documents:upsert", {"documents": documents}, "UpsertDocuments"
    )
    assert upserted == {"documentCount": 2, "passageCount": 2}
    assert get("/v1/collections/http-json", "GetCollection")["collection"]["documentCount"] == "2"
    document = get("/v1/collections/http-json/documents/1", "GetDocument")
    assert document["document"]["text"] == documents[0]["text"]
    listed = get("/v1/collections/http-json/documents?page_size=1", "ListDocuments")
    assert [d["id"] for d in listed["documents"]] == ["1"] and listed["nextPageToken"]
    # UploadFiles: the HTTP body is the file itself (google.api.HttpBody).
    calls.add("UploadFiles")
    uploaded = http.post(
        "/v1/collections/http-json/files",
        params={"file_name": "3.md"},
        content=b"# Three\n\nA third document, uploaded as a file.",
        headers={"content-type": "text/markdown"},
    )
    assert _ok(uploaded)["files"][0]["title"] == "Three"
    filtered = {"filter": {"conditions": [{"key": "lang", "equals": {"stringValue": "en"}}]}}
    count = post("/v1/collections/http-json/documents:count", filtered, "CountDocuments")
    assert count == {"documentCount": "1"}
    hits = post(
        "/v1/collections/http-json:search",
        {"query": "what does envoy retry?", "mode": "SEARCH_MODE_HYBRID", "topK": 1},
        "Search",
    )
    assert hits["hits"][0]["documentId"] == "1"

    query = {"query": "what does envoy retry?", "collections": ["http-json"]}
    context = post("/v1/queries:augment", query, "AugmentQuery")
    assert context["passages"][0]["documentId"] == "1"
    answer = post("/v1/queries:ask", query, "Ask")
    summary = answer[-1]["summary"]
    interaction_id = summary["interactionId"]
    rated = post(f"/v1/interactions/{interaction_id}:feedback", {"rating": 1}, "RecordFeedback")
    assert rated["interaction"]["rating"] == 1
    stored = get(f"/v1/interactions/{interaction_id}", "GetInteraction")
    assert stored["interaction"]["query"] == query["query"]
    exported = post("/v1/interactions:export", {"ratings": [1]}, "ExportInteractions")
    assert interaction_id in {m["interaction"]["interactionId"] for m in exported}

    # The language model's own API (a server stream: a JSON array of responses).
    generated = post(
        "/v1/llm:generate",
        {"messages": [{"role": "MESSAGE_ROLE_USER", "content": "Say hi."}], "maxTokens": 4},
        "Generate",
    )
    assert "summary" in generated[-1]
    deleted = post(
        "/v1/collections/http-json/documents:delete", {"ids": ["2", "9"]}, "DeleteDocuments"
    )
    assert deleted == {"deletedCount": 1}
    calls.add("DeleteCollection")
    assert _ok(http.delete("/v1/collections/http-json")) == {}

    every = {m.name for f in API_FILES for s in f.services_by_name.values() for m in s.methods}
    assert calls == every


@pytest.mark.parametrize(
    ("method", "path", "body", "http_status", "grpc_code"),
    [
        ("GET", "/v1/collections/no-such-collection", None, 404, 5),  # NOT_FOUND
        ("POST", "/v1/embeddings:embed", {"inputs": []}, 400, 3),  # INVALID_ARGUMENT
        ("POST", "/v1/collections", {"name": "Bad Name!"}, 400, 3),
    ],
)
def test_errors_are_http_statuses_with_the_grpc_status_in_the_body(
    http: httpx.Client, method: str, path: str, body: object, http_status: int, grpc_code: int
) -> None:
    response = http.request(method, path, json=body)
    assert response.status_code == http_status, response.text
    status = response.json()
    assert status["code"] == grpc_code and status["message"]


def test_a_missing_key_is_401_with_unauthenticated(mesh: Mesh) -> None:
    with httpx.Client(base_url=mesh.base_url, verify=mesh.ssl_context()) as client:
        response = client.get("/v1/collections")
    assert response.status_code == 401
    assert response.json()["code"] == 16


def test_without_a_client_certificate_no_http_either(mesh: Mesh) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(mesh.certs / "ca.pem"))
    with (
        httpx.Client(base_url=mesh.base_url, verify=context) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get("/v1/collections", headers={"authorization": f"Bearer {mesh.api_key}"})
