"""Breakers and fallback while answering: which backend answers, what the client sees, and
what the breakers count. Backends are httpx MockTransports (the remote-API double)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from ragmeshd.coordinator.answering import (
    AnswerOutcome,
    BackendSlot,
    ChunkEvent,
    HealthProbe,
    stream_answer,
)
from ragmeshd.coordinator.budget import Passage
from ragmeshd.coordinator.llm_backend import BackendConfig, ChatBackend
from ragmeshd.coordinator.routing import Route, Side
from ragmeshd.runtime.resilience import BreakerState, CircuitBreaker

PASSAGES = [Passage("docs", "a", "Cats purr.", 0, 0.9)]
Handler = Callable[[httpx.Request], httpx.Response]


def sse(*pieces: str, done: bool = True) -> bytes:
    lines = [
        "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]})
        for piece in pieces
    ]
    if done:
        lines.append("data: [DONE]")
    return "".join(line + "\n\n" for line in lines).encode()


def answers(*pieces: str) -> Handler:
    return lambda request: httpx.Response(200, content=sse(*pieces))


def fails(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, content=b"broken")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slot(
    side: Side, handler: Handler, failures: int, clock: FakeClock | None = None
) -> BackendSlot:
    backend = ChatBackend(
        BackendConfig(
            name=side.value,
            base_url=f"http://{side.value}.test/v1",
            model=f"{side.value}-model",
            api_key=None,
            connect_timeout_s=1,
            idle_timeout_s=1,
            deadline_s=5,
            temperature=0,
        ),
        transport=httpx.MockTransport(handler),
    )
    breaker = CircuitBreaker(
        side.value, failure_threshold=failures, recovery_s=10, clock=clock or FakeClock()
    )
    return BackendSlot(side, backend, breaker, HealthProbe(backend, cache_s=5, timeout_s=1))


async def run(
    route: Route, slots: dict[Side, BackendSlot]
) -> tuple[list[ChunkEvent], AnswerOutcome]:
    outcome = AnswerOutcome()
    events = [
        event
        async for event in stream_answer(
            route,
            slots,
            [{"role": "user", "content": "q"}],
            PASSAGES,
            max_tokens=16,
            deadline=time.monotonic() + 30,
            outcome=outcome,
        )
    ]
    return events, outcome


async def test_the_chosen_backend_answers_in_order() -> None:
    slots = {Side.LOCAL: slot(Side.LOCAL, answers("Cats ", "purr."), 3)}
    events, outcome = await run(Route(Side.LOCAL, "why"), slots)
    assert [(e.text, e.source, e.discard_previous) for e in events] == [
        ("Cats ", Side.LOCAL, False),
        ("purr.", Side.LOCAL, False),
    ]
    assert outcome.answered_by is Side.LOCAL
    assert outcome.model == "local-model"
    assert outcome.answer == "Cats purr."
    assert outcome.failures == []


async def test_a_failing_backend_falls_back_to_the_other() -> None:
    slots = {
        Side.LOCAL: slot(Side.LOCAL, fails, 3),
        Side.REMOTE: slot(Side.REMOTE, answers("remote answer"), 5),
    }
    events, outcome = await run(Route(Side.LOCAL, "why", Side.REMOTE), slots)
    assert [(e.text, e.source, e.discard_previous) for e in events] == [
        ("remote answer", Side.REMOTE, False)
    ]
    assert outcome.answered_by is Side.REMOTE
    assert_generic_failure(outcome.failures, "local")


async def test_a_backend_failing_mid_answer_is_replaced_and_its_text_discarded() -> None:
    slots = {
        Side.REMOTE: slot(
            Side.REMOTE, lambda request: httpx.Response(200, content=sse("half ", done=False)), 5
        ),
        Side.LOCAL: slot(Side.LOCAL, answers("whole ", "answer"), 3),
    }
    events, outcome = await run(Route(Side.REMOTE, "why", Side.LOCAL), slots)
    assert [(e.text, e.source, e.discard_previous) for e in events] == [
        ("half ", Side.REMOTE, False),
        ("whole ", Side.LOCAL, True),
        ("answer", Side.LOCAL, False),
    ]
    assert outcome.answer == "whole answer"
    assert_generic_failure(outcome.failures, "remote")


async def test_when_nobody_answers_the_context_is_the_answer() -> None:
    slots = {Side.LOCAL: slot(Side.LOCAL, fails, 3), Side.REMOTE: slot(Side.REMOTE, fails, 5)}
    events, outcome = await run(Route(Side.REMOTE, "why", Side.LOCAL), slots)
    assert len(events) == 1
    assert events[0].source is Side.NONE
    assert outcome.answered_by is Side.NONE
    assert events[0].text.startswith(
        "Note: no language model answered this query (remote: the backend failed (failure id "
    )
    assert "local: the backend failed" in events[0].text
    assert "HTTP 500" not in events[0].text and "broken" not in events[0].text
    assert "Cats purr." in events[0].text


async def test_a_none_route_answers_with_its_reason_and_the_context() -> None:
    events, outcome = await run(Route(Side.NONE, "no language-model backend is configured"), {})
    assert outcome.answered_by is Side.NONE
    assert "(no language-model backend is configured)" in events[0].text
    assert not outcome.failures


async def test_the_breaker_opens_after_n_failures_then_falls_back_without_calling() -> None:
    calls = {"local": 0}

    def counted_failure(request: httpx.Request) -> httpx.Response:
        calls["local"] += 1
        return fails(request)

    clock = FakeClock()
    slots = {
        Side.LOCAL: slot(Side.LOCAL, counted_failure, 3, clock),
        Side.REMOTE: slot(Side.REMOTE, answers("remote"), 5),
    }
    route = Route(Side.LOCAL, "why", Side.REMOTE)
    for _ in range(3):
        _, outcome = await run(route, slots)
        assert outcome.answered_by is Side.REMOTE
    assert slots[Side.LOCAL].breaker.state is BreakerState.OPEN
    assert calls["local"] == 3

    _, outcome = await run(route, slots)
    assert calls["local"] == 3  # not called while open
    assert outcome.failures == ["local: circuit breaker open"]
    assert outcome.answered_by is Side.REMOTE


async def test_the_breaker_closes_after_a_successful_probe() -> None:
    healthy = {"now": False}

    def flaky(request: httpx.Request) -> httpx.Response:
        return answers("local again")(request) if healthy["now"] else fails(request)

    clock = FakeClock()
    slots = {Side.LOCAL: slot(Side.LOCAL, flaky, 3, clock)}
    route = Route(Side.LOCAL, "why")
    for _ in range(3):
        await run(route, slots)
    breaker = slots[Side.LOCAL].breaker
    assert breaker.state is BreakerState.OPEN

    clock.now = 11  # past the recovery time: one probe goes through
    assert breaker.state is BreakerState.HALF_OPEN
    healthy["now"] = True
    _, outcome = await run(route, slots)
    assert outcome.answered_by is Side.LOCAL
    assert breaker.state is BreakerState.CLOSED


async def test_a_failed_probe_reopens_the_breaker() -> None:
    clock = FakeClock()
    slots = {Side.LOCAL: slot(Side.LOCAL, fails, 3, clock)}
    for _ in range(3):
        await run(Route(Side.LOCAL, "why"), slots)
    clock.now = 11
    _, outcome = await run(Route(Side.LOCAL, "why"), slots)
    assert_generic_failure(outcome.failures, "local")
    assert slots[Side.LOCAL].breaker.state is BreakerState.OPEN


async def test_the_health_probe_is_cached() -> None:
    probes = {"count": 0}

    def models(request: httpx.Request) -> httpx.Response:
        probes["count"] += 1
        return httpx.Response(200, json={"data": []})

    clock = FakeClock()
    backend = slot(Side.LOCAL, models, 3).backend
    probe = HealthProbe(backend, cache_s=5, timeout_s=1, clock=clock)
    assert await probe.healthy()
    assert await probe.healthy()
    assert probes["count"] == 1
    clock.now = 6
    assert await probe.healthy()
    assert probes["count"] == 2


@pytest.mark.parametrize("first", [Side.LOCAL, Side.REMOTE])
async def test_an_open_breaker_with_no_fallback_gives_the_context(first: Side) -> None:
    slots = {first: slot(first, answers("x"), 1)}
    slots[first].breaker.record_failure()
    events, outcome = await run(Route(first, "why"), slots)
    assert outcome.answered_by is Side.NONE
    assert f"{first.value}: circuit breaker open" in events[0].text


def assert_generic_failure(failures: list[str], side: str) -> None:
    """A backend's failure reaches the client only as a generic reason with an id."""
    assert len(failures) == 1
    assert failures[0].startswith(f"{side}: the backend failed (failure id "), failures
    assert "broken" not in failures[0] and "DONE" not in failures[0]
