"""The adapter's body cap (openai_compat/gate.py): over the limit is 413 before the route runs,
whether the size is declared or streamed; within it, the route gets the whole body."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ragmeshd.openai_compat.gate import BodyLimit

LIMIT = 1024
calls: list[int] = []


async def echo_size(request: Request) -> JSONResponse:
    body = await request.body()
    calls.append(len(body))
    return JSONResponse({"bytes": len(body)})


def client() -> httpx.AsyncClient:
    app = BodyLimit(Starlette(routes=[Route("/echo", echo_size, methods=["POST"])]), LIMIT)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_a_body_within_the_limit_reaches_the_route_whole() -> None:
    async with client() as http:
        answer = await http.post("/echo", content=b"x" * LIMIT)
    assert answer.status_code == 200
    assert answer.json() == {"bytes": LIMIT}


async def test_a_declared_oversized_body_is_413_before_the_route() -> None:
    calls.clear()
    async with client() as http:
        answer = await http.post("/echo", content=b"x" * (LIMIT + 1))
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"
    assert str(LIMIT) in answer.json()["error"]["message"]
    assert calls == []


async def test_a_streamed_oversized_body_is_413_before_the_route() -> None:
    calls.clear()

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(4):
            yield b"y" * 400

    async with client() as http:
        answer = await http.post("/echo", content=chunks())
    assert answer.status_code == 413
    assert calls == []
