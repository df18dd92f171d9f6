"""The adapter's answer assembly (ragmeshd/openai_compat/app.py): an Ask stream, given as its
messages, becomes one completion or a server-sent-event stream ending with `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmeshd.openai_compat import convert
from ragmeshd.openai_compat.app import _collect, _sse
from ragmeshd.openai_compat.convert import ApiError

SUMMARY = pb.AskResponse(
    summary=pb.AskSummary(
        interaction_id="i-1",
        decision=pb.DECISION_LOCAL,
        answered_by=pb.DECISION_REMOTE,
        fallback=True,
        passages=[pb.ContextPassage(collection="c", document_id="d", token_count=4)],
    )
)


def chunk(text: str, discard: bool = False) -> pb.AskResponse:
    return pb.AskResponse(chunk=pb.AnswerChunk(text=text, discard_previous=discard))


async def stream(*messages: pb.AskResponse) -> AsyncIterator[pb.AskResponse]:
    for message in messages:
        yield message


def call(include_usage: bool = False) -> convert.ChatCall:
    return convert.ChatCall(pb.AskRequest(query="q"), convert.CHAT_MODEL, True, include_usage)


async def events(*messages: pb.AskResponse, include_usage: bool = False) -> list[str]:
    first, *rest = messages
    return [e async for e in _sse(call(include_usage), first, stream(*rest))]


async def test_collect_keeps_only_the_text_after_a_restart() -> None:
    answer, summary, sources = await _collect(
        stream(
            chunk("local par"),
            chunk("remote ", discard=True),
            chunk("answer"),
            pb.AskResponse(sources=pb.AnswerSources(sources=[pb.Source(number=1)])),
            SUMMARY,
        )
    )
    assert answer == "remote answer" and summary.interaction_id == "i-1"
    assert sources is not None and sources.sources[0].number == 1


async def test_collect_without_a_summary_is_a_bad_gateway() -> None:
    with pytest.raises(ApiError) as error:
        await _collect(stream(chunk("text")))
    assert error.value.status == 502


async def test_sse_chunks_then_the_sources_then_done() -> None:
    sent = await events(chunk("local par"), chunk("remote", discard=True), SUMMARY)
    assert all(e.startswith("data: ") and e.endswith("\n\n") for e in sent)
    assert sent[-1] == "data: [DONE]\n\n"
    bodies = [json.loads(e.removeprefix("data: ")) for e in sent[:-1]]
    assert bodies[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [b["choices"][0]["delta"].get("content") for b in bodies[1:3]] == ["local par", "remote"]
    assert "ragmesh" not in bodies[1]
    assert bodies[2]["ragmesh"] == {"discard_previous": True}
    last = bodies[3]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["ragmesh"]["interaction_id"] == "i-1" and last["ragmesh"]["fallback"] is True
    assert last["ragmesh"]["sources"][0]["document_id"] == "d"
    assert len({b["id"] for b in bodies}) == 1


async def test_sse_usage_chunk_when_asked() -> None:
    sent = await events(chunk("two words"), SUMMARY, include_usage=True)
    usage = json.loads(sent[-2].removeprefix("data: "))
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


async def test_an_error_part_way_is_an_error_event_then_done() -> None:
    import grpc

    class Failed(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return "search is down"

    async def failing() -> AsyncIterator[pb.AskResponse]:
        yield chunk("partial")
        raise Failed()

    sent = [e async for e in _sse(call(), chunk("first"), failing())]
    error = json.loads(sent[-2].removeprefix("data: "))
    assert error["error"]["grpc_status"] == "UNAVAILABLE"
    assert error["error"]["message"] == "search is down"
    assert sent[-1] == "data: [DONE]\n\n"
