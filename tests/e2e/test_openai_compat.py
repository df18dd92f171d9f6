"""The official `openai` client, pointed at Envoy with the client certificate and the API key,
works unchanged against /v1/embeddings, /v1/models and /v1/chat/completions."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
CHAT_MODEL = "ragmesh-rag"
COLLECTION = "openai-compat"


def _client(mesh: Mesh, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{mesh.base_url}/v1",
        api_key=api_key,
        http_client=httpx.Client(verify=mesh.ssl_context()),
        max_retries=0,
    )


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[openai.OpenAI]:
    with _client(mesh, mesh.api_key) as c:
        yield c


@pytest.fixture(scope="module")
def collection(mesh: Mesh) -> str:
    """A collection with two documents, made over HTTP/JSON."""
    headers = {"authorization": f"Bearer {mesh.api_key}"}
    with httpx.Client(base_url=mesh.base_url, verify=mesh.ssl_context(), headers=headers) as http:
        http.post("/v1/collections", json={"name": COLLECTION}).raise_for_status()
        documents = [
            {"id": "retries", "text": "Envoy retries idempotent calls on another replica."},
            {"id": "vectors", "text": "PostgreSQL with pgvector stores the passage vectors."},
        ]
        upsert = f"/v1/collections/{COLLECTION}/documents:upsert"
        http.post(upsert, json={"documents": documents}, timeout=60).raise_for_status()
    return COLLECTION


def test_embeddings_create_default_base64_matches_float(client: openai.OpenAI) -> None:
    # The client asks for base64 unless told otherwise and decodes it into floats.
    default = client.embeddings.create(model=EMBEDDING_MODEL, input=["hello mesh", "bye"])
    floats = client.embeddings.create(
        model=EMBEDDING_MODEL, input=["hello mesh", "bye"], encoding_format="float"
    )
    assert [d.index for d in default.data] == [0, 1]
    assert len(default.data[0].embedding) == 384
    assert np.allclose(default.data[0].embedding, floats.data[0].embedding, atol=1e-6)
    assert np.isclose(np.linalg.norm(default.data[0].embedding), 1.0, atol=1e-4)
    assert default.model == EMBEDDING_MODEL and default.usage.prompt_tokens > 0


def test_embeddings_errors_are_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown_model:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert unknown_model.value.body["grpc_status"] == "NOT_FOUND"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model=EMBEDDING_MODEL, input="x" * 20_000)
    assert too_long.value.body["grpc_status"] == "INVALID_ARGUMENT"  # type: ignore[index]


def test_models_list(client: openai.OpenAI) -> None:
    models = {model.id for model in client.models.list()}
    assert models == {EMBEDDING_MODEL, CHAT_MODEL}
    assert client.models.retrieve(CHAT_MODEL).owned_by == "ragmesh"


def test_a_wrong_key_is_an_authentication_error(mesh: Mesh) -> None:
    with (
        _client(mesh, "rmk_000000000000_" + "x" * 43) as wrong,
        pytest.raises(openai.AuthenticationError),
    ):
        wrong.models.list()


def test_chat_completion_with_sources(client: openai.OpenAI, collection: str) -> None:
    response = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What does Envoy retry?"},
        ],
        extra_body={"ragmesh": {"collections": [collection], "top_k": 2}},
    )
    answer = response.choices[0].message.content or ""
    assert response.choices[0].finish_reason == "stop"
    extra = response.model_extra["ragmesh"]  # type: ignore[index]
    assert extra["interaction_id"] and answer.strip()
    # Below the confidence threshold the local model is not asked and the answer says the
    # documents do not contain it; either way the passages come back as numbered sources.
    assert extra["answered_by"] in ("none", "local")
    assert extra["sources"][0]["document_id"] == "retries"
    assert "Envoy retries idempotent calls" in extra["sources"][0]["text"]
    assert response.id == f"chatcmpl-{extra['interaction_id']}"


def test_chat_completion_streamed_as_server_sent_events(
    client: openai.OpenAI, collection: str
) -> None:
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Where are the vectors stored?"}],
        extra_body={"ragmesh": {"collections": [collection]}},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # the client stops at `data: [DONE]`
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finishing) == 1
    sources = finishing[0].model_extra["ragmesh"]["sources"]  # type: ignore[index]
    assert sources[0]["document_id"] == "vectors"
    assert "pgvector stores the passage vectors" in sources[0]["text"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_stream_ends_with_done(mesh: Mesh, collection: str) -> None:
    """The raw event stream, as any SSE client sees it."""
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "retries?"}],
        "stream": True,
        "ragmesh": {"collections": [collection]},
    }
    headers = {"authorization": f"Bearer {mesh.api_key}"}
    with (
        httpx.Client(base_url=mesh.base_url, verify=mesh.ssl_context(), headers=headers) as http,
        http.stream("POST", "/v1/chat/completions", json=body, timeout=60) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"


def test_chat_bad_input_is_a_400_before_any_stream(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "x" * 5000}],
            stream=True,
        )
    assert error.value.body["grpc_status"] == "INVALID_ARGUMENT"  # type: ignore[index]
