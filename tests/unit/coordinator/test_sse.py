"""Parsing chat-completions event streams, and the streaming client's failure modes (the
backend is an httpx MockTransport: the one allowed double, a remote API)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from ragmeshd.coordinator.llm_backend import BackendConfig, BackendError, ChatBackend
from ragmeshd.coordinator.sse import ChatStreamParser, StreamFormatError


def chunk(content: str | None = None, finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    body = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return "data: " + json.dumps(body)


def parse(lines: list[str]) -> tuple[str, ChatStreamParser]:
    parser = ChatStreamParser()
    return "".join(parser.feed_line(line) for line in lines), parser


def test_a_well_formed_stream() -> None:
    text, parser = parse(
        [
            ": keep-alive",
            'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}',
            "",
            chunk("Hel"),
            "",
            "event: message",
            chunk("lo"),
            "id: 3",
            chunk(finish="stop"),
            'data: {"choices":[],"usage":{"total_tokens":5}}',
            "data: [DONE]",
            "",
            "anything after [DONE] is ignored",
        ]
    )
    assert text == "Hello"
    assert parser.done and parser.complete
    assert parser.finish_reason == "stop"


def test_data_without_a_space_and_crlf_endings() -> None:
    text, parser = parse(['data:{"choices":[{"delta":{"content":"x"}}]}\r', "data:[DONE]\r"])
    assert text == "x"
    assert parser.done


def test_a_stream_with_only_a_finish_reason_is_complete() -> None:
    _, parser = parse([chunk("a"), chunk(finish="length")])
    assert not parser.done
    assert parser.complete


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("<html>502 Bad Gateway</html>", "not an event-stream line"),
        ("garbage: yes", "unexpected event-stream field"),
        ("data: {not json", "not JSON"),
        ("data: [1, 2]", "not a JSON object"),
        ('data: {"id": "x"}', "no choices list"),
        ('data: {"choices": ["x"]}', "choice is not a JSON object"),
        ('data: {"choices": [{"delta": "x"}]}', "delta is not a JSON object"),
        ('data: {"choices": [{"delta": {"content": 7}}]}', "content is not a string"),
        ('data: {"error": {"message": "model overloaded"}}', "model overloaded"),
    ],
)
def test_garbage_is_refused(line: str, message: str) -> None:
    with pytest.raises(StreamFormatError, match=message):
        ChatStreamParser().feed_line(line)


# --- the client ------------------------------------------------------------------------------


def backend(
    handler: Callable[[httpx.Request], httpx.Response | asyncio.Future[httpx.Response]],
    *,
    idle_timeout_s: float = 5.0,
    deadline_s: float = 10.0,
    api_key: str | None = None,
) -> ChatBackend:
    config = BackendConfig(
        name="test",
        base_url="http://llm.test/v1",
        model="tiny",
        api_key=api_key,
        connect_timeout_s=1.0,
        idle_timeout_s=idle_timeout_s,
        deadline_s=deadline_s,
        temperature=0.0,
    )
    return ChatBackend(config, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


def sse(*lines: str) -> bytes:
    return "".join(line + "\n\n" for line in lines).encode()


async def collect(client: ChatBackend) -> list[str]:
    return [
        piece
        async for piece in client.stream_chat([{"role": "user", "content": "hi"}], max_tokens=8)
    ]


async def test_the_client_streams_pieces_and_sends_an_openai_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=sse(chunk("A"), chunk("B"), "data: [DONE]"))

    client = backend(handler, api_key="sk-test")
    assert await collect(client) == ["A", "B"]
    request = seen[0]
    assert request.url == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = json.loads(request.content)
    assert body["stream"] is True
    assert body["model"] == "tiny"
    assert body["max_tokens"] == 8
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    await client.aclose()


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(503, content=b"overloaded"), "HTTP 503"),
        (httpx.Response(200, content=b"<html>hello</html>\n"), "garbage"),
        (httpx.Response(200, content=sse(chunk("half"))), "ended before"),
        (httpx.Response(200, content=sse("data: [DONE]")), "empty"),
        (httpx.Response(200, content=sse(chunk("x"), 'data: {"error": "boom"}')), "boom"),
    ],
)
async def test_bad_answers_are_backend_errors(response: httpx.Response, message: str) -> None:
    client = backend(lambda request: response)
    with pytest.raises(BackendError, match=message):
        await collect(client)


async def test_a_refused_connection_is_a_backend_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(BackendError, match="ConnectError"):
        await collect(backend(handler))


async def _slow_body(first: bytes, pause_s: float) -> AsyncIterator[bytes]:
    yield first
    await asyncio.sleep(pause_s)
    yield sse("data: [DONE]")


async def test_a_silent_backend_fails_after_the_idle_timeout() -> None:
    client = backend(
        lambda request: httpx.Response(200, content=_slow_body(sse(chunk("a")), 30)),
        idle_timeout_s=0.2,
    )
    pieces: list[str] = []
    with pytest.raises(BackendError, match=r"no data for 0\.2 s"):
        async for piece in client.stream_chat([], max_tokens=1):
            pieces.append(piece)
    assert pieces == ["a"]


async def test_a_trickling_backend_fails_at_the_deadline() -> None:
    async def trickle() -> AsyncIterator[bytes]:
        while True:
            yield sse(chunk("."))
            await asyncio.sleep(0.05)

    client = backend(lambda request: httpx.Response(200, content=trickle()), deadline_s=0.3)
    with pytest.raises(BackendError, match="deadline"):
        await collect(client)


async def test_the_health_probe_asks_for_the_models() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        return httpx.Response(200, json={"data": []})

    assert await backend(handler).healthy(1.0)
    assert not await backend(lambda request: httpx.Response(500)).healthy(1.0)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert not await backend(refuse).healthy(1.0)
