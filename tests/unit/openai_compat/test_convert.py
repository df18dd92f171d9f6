"""OpenAI's wire format to ragmesh's protos and back (ragmeshd/openai_compat/convert.py)."""

from __future__ import annotations

import base64
from typing import Any

import grpc
import numpy as np
import pytest

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmeshd.openai_compat import convert
from ragmeshd.openai_compat.convert import ApiError


def test_base64_is_little_endian_float32_as_the_openai_client_decodes_it() -> None:
    values = [0.5, -1.25, 3.0e-7, 1.0]
    encoded = convert.encode_vector(values, "base64")
    assert isinstance(encoded, str)
    # What the openai package does with a base64 embedding.
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="float32").tolist()
    assert decoded == pytest.approx(values)
    assert convert.encode_vector(values, "float") == values


def test_embeddings_request_and_response() -> None:
    call = convert.parse_embeddings({"input": "hi", "model": "m"})
    assert call.inputs == ["hi"] and call.encoding_format == "float" and call.dimensions is None
    call = convert.parse_embeddings(
        {"input": ["a", "b"], "model": "m", "encoding_format": "base64", "dimensions": 3}
    )
    assert call.inputs == ["a", "b"] and call.dimensions == 3
    reply = embeddings_pb.EmbedResponse(
        embeddings=[
            embeddings_pb.Embedding(values=[1.0, 0.0], token_count=3),
            embeddings_pb.Embedding(values=[0.0, 1.0], token_count=4),
        ],
        model="m",
        dimensions=2,
    )
    body = convert.embeddings_response(reply, "float")
    assert body["object"] == "list" and body["model"] == "m"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1]["embedding"] == [0.0, 1.0]
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "input"),
        ({"input": [], "model": "m"}, "input"),
        ({"input": [[1, 2, 3]], "model": "m"}, "input"),
        ({"input": "x"}, "model"),
        ({"input": "x", "model": "m", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "model": "m", "dimensions": 0}, "dimensions"),
    ],
)
def test_bad_embeddings_requests_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as error:
        convert.parse_embeddings(body)
    assert error.value.status == 400 and error.value.param == param


def test_the_body_must_be_an_object() -> None:
    with pytest.raises(ApiError, match="JSON object"):
        convert.parse_embeddings(["input"])


def test_models_list_holds_the_embedding_and_the_chat_model() -> None:
    body = convert.models_response("all-MiniLM-L6-v2")
    assert [m["id"] for m in body["data"]] == ["all-MiniLM-L6-v2", convert.CHAT_MODEL]
    assert all(m["object"] == "model" and m["owned_by"] == "ragmesh" for m in body["data"])


def test_chat_takes_the_last_user_message_and_the_ragmesh_options() -> None:
    call = convert.parse_chat(
        {
            "model": convert.CHAT_MODEL,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]},
            ],
            "max_tokens": 64,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ragmesh": {
                "collections": ["notes"],
                "top_k": 3,
                "max_context_tokens": 500,
                "mode": "keyword",
                "force": "none",
            },
        }
    )
    request = call.request
    assert request.query == "second" and list(request.collections) == ["notes"]
    assert request.top_k == 3 and request.max_context_tokens == 500
    assert request.mode == search_pb.SEARCH_MODE_KEYWORD
    assert request.force == coordinator_pb.DECISION_NONE
    assert request.max_answer_tokens == 64
    assert call.stream and call.include_usage


_ASK = {"model": "m", "messages": [{"role": "user", "content": "q"}]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": _ASK["messages"]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "system", "content": "q"}]}, "messages"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image"}]}]},
            "messages",
        ),
        ({**_ASK, "n": 2}, "n"),
        ({**_ASK, "max_tokens": 0}, "max_tokens"),
        ({**_ASK, "ragmesh": []}, "ragmesh"),
        ({**_ASK, "ragmesh": {"k": 1}}, "ragmesh"),
        ({**_ASK, "ragmesh": {"mode": "x"}}, "ragmesh.mode"),
        ({**_ASK, "ragmesh": {"force": "x"}}, "ragmesh.force"),
        ({**_ASK, "ragmesh": {"top_k": "3"}}, "ragmesh.top_k"),
        ({**_ASK, "ragmesh": {"collections": "c"}}, "ragmesh.collections"),
    ],
)
def test_bad_chat_requests_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as error:
        convert.parse_chat(body)
    assert error.value.status == 400 and error.value.param == param


def _summary() -> coordinator_pb.AskSummary:
    return coordinator_pb.AskSummary(
        interaction_id="abc",
        decision=coordinator_pb.DECISION_LOCAL,
        answered_by=coordinator_pb.DECISION_REMOTE,
        model="llama",
        fallback=True,
        fallback_reason="local: timed out",
        confidence=0.8,
        passages=[
            coordinator_pb.ContextPassage(
                collection="c", document_id="d", text="t", passage_index=2, score=0.5, token_count=9
            )
        ],
    )


def test_chat_response_carries_the_sources_in_the_ragmesh_field() -> None:
    body = convert.chat_response(_summary(), "two words", convert.CHAT_MODEL, 100)
    assert body["id"] == "chatcmpl-abc" and body["model"] == "llama" and body["created"] == 100
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "two words",
        "refusal": None,
    }
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    extra = body["ragmesh"]
    assert extra["decision"] == "local" and extra["answered_by"] == "remote"
    assert extra["fallback"] and extra["fallback_reason"] == "local: timed out"
    assert extra["sources"] == [
        {
            "number": 1,
            "collection": "c",
            "document_id": "d",
            "passage_index": 2,
            "score": 0.5,
            "text": "t",
            "source": "d",
            "title": "",
            "section": "",
            "page": None,
            "cited": False,
        }
    ]


def test_the_sources_of_the_ask_stream_name_files_titles_and_citations() -> None:
    sources = coordinator_pb.AnswerSources(
        sources=[
            coordinator_pb.Source(number=1, source="notes/a.pdf", title="A", page=3, cited=True)
        ]
    )
    body = convert.chat_response(_summary(), "x [1]", convert.CHAT_MODEL, 100, sources)
    (source,) = body["ragmesh"]["sources"]
    assert (source["source"], source["title"], source["page"], source["cited"]) == (
        "notes/a.pdf", "A", 3, True,
    )  # fmt: skip


def test_chat_chunks() -> None:
    chunk = convert.chat_chunk("id", "m", 1, {"content": "x"})
    assert chunk["object"] == "chat.completion.chunk" and "ragmesh" not in chunk
    assert chunk["choices"] == [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]
    last = convert.chat_chunk("id", "m", 1, {}, "stop", {"sources": []})
    assert last["choices"][0]["finish_reason"] == "stop" and last["ragmesh"] == {"sources": []}


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error"),
        (grpc.StatusCode.UNAUTHENTICATED, 401, "authentication_error"),
        (grpc.StatusCode.NOT_FOUND, 404, "not_found_error"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limit_error"),
        (grpc.StatusCode.UNAVAILABLE, 503, "service_unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "timeout"),
        (grpc.StatusCode.INTERNAL, 500, "server_error"),
    ],
)
def test_grpc_statuses_map_to_http_with_the_status_in_the_body(
    code: grpc.StatusCode, status: int, kind: str
) -> None:
    error = convert.from_rpc_error(_Failed(code, "why"))
    assert (error.status, error.type) == (status, kind)
    assert error.body()["error"]["grpc_status"] == code.name
    assert error.body()["error"]["message"] == "why"
