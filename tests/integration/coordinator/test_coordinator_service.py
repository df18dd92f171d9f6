"""The coordinator as a real process, with real embeddings and search servers, a real
embedded PostgreSQL, and deterministic chat-completions doubles as its backends."""

from __future__ import annotations

import asyncio
import datetime
import re
import time
import uuid
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as pb_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from tests.helpers import ServerProcess, expect_error
from tests.integration.coordinator.conftest import (
    DOCS,
    DOCUMENTS,
    THRESHOLD,
    VECTORS_ONLY,
    Coordinator,
)

pytestmark = pytest.mark.integration

CONFIDENT = DOCUMENTS["tides"]  # the text of a document: similarity about 1
UNSURE = "What is the capital city of Mongolia?"  # about nothing stored


def stub(target: str) -> pb_grpc.CoordinatorServiceStub:
    return pb_grpc.CoordinatorServiceStub(grpc.aio.insecure_channel(target))


@dataclass
class AskResult:
    chunks: list[pb.AnswerChunk] = field(default_factory=list)
    chunk_times: list[float] = field(default_factory=list)
    summary: pb.AskSummary | None = None
    summary_time: float = 0.0
    order: list[str] = field(default_factory=list)
    sources: pb.AnswerSources | None = None

    @property
    def answer(self) -> str:
        text = ""
        for chunk in self.chunks:
            text = chunk.text if chunk.discard_previous else text + chunk.text
        return text


async def ask(target: str, query: str, **fields: object) -> AskResult:
    result = AskResult()
    call = stub(target).Ask(pb.AskRequest(query=query, collections=[DOCS], **fields), timeout=30)
    async for message in call:
        kind = message.WhichOneof("event")
        result.order.append(kind)
        if kind == "chunk":
            result.chunks.append(message.chunk)
            result.chunk_times.append(time.monotonic())
        elif kind == "sources":
            result.sources = message.sources
        else:
            result.summary = message.summary
            result.summary_time = time.monotonic()
    assert result.order and result.order[-1] == "summary"
    assert result.order.count("summary") == 1
    # The sources, always, right before the summary: one per context passage.
    assert result.order[-2] == "sources" and result.order.count("sources") == 1
    assert result.sources is not None and result.summary is not None
    assert [s.document_id for s in result.sources.sources] == [
        p.document_id for p in result.summary.passages
    ]
    return result


async def consume(stream) -> list:  # type: ignore[no-untyped-def]
    return [message async for message in stream]


# --- AugmentQuery ----------------------------------------------------------------------------


async def test_augmentation_finds_the_passages_within_budget(coordinator: Coordinator) -> None:
    response = await stub(coordinator.target).AugmentQuery(
        pb.AugmentQueryRequest(
            query="Why do cats purr?", collections=[DOCS], top_k=3, max_context_tokens=60
        )
    )
    assert response.passages[0].document_id == "cats"
    assert response.context_token_count <= 60
    assert response.context_token_count == sum(p.token_count for p in response.passages)
    assert len(response.passages) <= 3
    assert [p.score for p in response.passages] == sorted(
        (p.score for p in response.passages), reverse=True
    )
    assert 0 < response.confidence <= 1
    assert "<<<passage 1 (collection coord-docs, document cats" in response.prompt
    assert response.prompt.endswith("Question: Why do cats purr?")
    assert response.system_prompt
    assert list(response.collections) == [DOCS]


async def test_a_long_passage_is_cut_to_the_budget(coordinator: Coordinator) -> None:
    response = await stub(coordinator.target).AugmentQuery(
        pb.AugmentQueryRequest(
            query="lighthouses fog signals coastal navigation",
            collections=[DOCS],
            top_k=1,
            max_context_tokens=40,
            mode=search_pb.SEARCH_MODE_DENSE,
        )
    )
    (passage,) = response.passages
    assert passage.document_id == "long"
    assert passage.truncated
    assert 32 <= passage.token_count <= 40
    assert response.context_token_count == passage.token_count


# --- routing ---------------------------------------------------------------------------------


async def test_confident_and_healthy_goes_local(coordinator: Coordinator) -> None:
    result = await ask(coordinator.target, CONFIDENT)
    summary = result.summary
    assert summary is not None
    assert summary.decision == pb.DECISION_LOCAL
    assert summary.answered_by == pb.DECISION_LOCAL
    assert summary.model == "tiny-local"
    assert not summary.fallback
    assert summary.confidence >= THRESHOLD
    assert f"threshold {THRESHOLD:.2f} and the local backend is healthy" in summary.reason
    assert result.answer == coordinator.local.answer_for(CONFIDENT)  # type: ignore[union-attr]
    assert all(chunk.source == pb.DECISION_LOCAL for chunk in result.chunks)


async def test_low_confidence_goes_remote(coordinator: Coordinator) -> None:
    result = await ask(coordinator.target, UNSURE)
    summary = result.summary
    assert summary is not None
    assert summary.decision == summary.answered_by == pb.DECISION_REMOTE
    assert summary.model == "big-remote"
    assert summary.confidence < THRESHOLD
    assert summary.reason.startswith("confidence ")
    assert f"< threshold {THRESHOLD:.2f}" in summary.reason
    assert result.answer == coordinator.remote.answer_for(UNSURE)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("force", "side"), [(pb.DECISION_LOCAL, "local"), (pb.DECISION_REMOTE, "remote")]
)
async def test_a_forced_side_wins(coordinator: Coordinator, force: int, side: str) -> None:
    query = UNSURE if force == pb.DECISION_LOCAL else CONFIDENT
    result = await ask(coordinator.target, query, force=force)
    assert result.summary is not None
    assert result.summary.decision == result.summary.answered_by == force
    assert result.summary.reason == f"the request forced the {side} backend"
    assert result.answer.startswith(f"{side} answer:")


async def test_an_unhealthy_local_backend_sends_confident_queries_remote(
    coordinator: Coordinator,
) -> None:
    coordinator.local.healthy = False  # type: ignore[union-attr]
    await asyncio.sleep(0.3)  # past the probe cache
    result = await ask(coordinator.target, CONFIDENT)
    assert result.summary is not None
    assert result.summary.decision == pb.DECISION_REMOTE
    assert "health probe failed" in result.summary.reason
    assert coordinator.local.calls == 0  # type: ignore[union-attr]


async def test_the_threshold_is_re_read_from_the_config_file(coordinator: Coordinator) -> None:
    assert coordinator.config_file is not None
    try:
        coordinator.config_file.write_text("[coordinator]\nconfidence_threshold = 0.0\n")
        await asyncio.sleep(0.5)
        result = await ask(coordinator.target, UNSURE)
        assert result.summary is not None
        assert result.summary.decision == pb.DECISION_LOCAL
        assert "threshold 0.00" in result.summary.reason
    finally:
        coordinator.config_file.write_text(f"[coordinator]\nconfidence_threshold = {THRESHOLD}\n")
        await asyncio.sleep(0.5)
    result = await ask(coordinator.target, UNSURE)
    assert result.summary is not None
    assert result.summary.decision == pb.DECISION_REMOTE


async def test_no_backend_configured_answers_with_the_context(
    bare_coordinator: Coordinator,
) -> None:
    result = await ask(bare_coordinator.target, "Why do cats purr?")
    summary = result.summary
    assert summary is not None
    assert summary.decision == summary.answered_by == pb.DECISION_NONE
    assert summary.reason == "no language-model backend is configured"
    assert not summary.fallback
    assert summary.model == ""
    assert result.answer.startswith(
        "Note: no language model answered this query (no language-model backend is configured)"
    )
    assert DOCUMENTS["cats"] in result.answer
    assert summary.passages[0].document_id == "cats"


async def test_forcing_none_returns_the_context_without_calling_a_backend(
    coordinator: Coordinator,
) -> None:
    result = await ask(coordinator.target, CONFIDENT, force=pb.DECISION_NONE)
    assert result.summary is not None
    assert result.summary.answered_by == pb.DECISION_NONE
    assert coordinator.local.calls == coordinator.remote.calls == 0  # type: ignore[union-attr]
    assert DOCUMENTS["tides"] in result.answer


# --- fallback --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("fail", "remote: HTTP 500"),
        ("garbage", "remote: garbage in the stream"),
        ("hang", "remote: no data for 1 s"),
        ("midway", "remote: the stream ended before [DONE]"),
    ],
)
async def test_a_failing_remote_falls_back_to_local(
    coordinator: Coordinator, mode: str, why: str
) -> None:
    coordinator.remote.mode = mode  # type: ignore[union-attr]
    result = await ask(coordinator.target, UNSURE)
    summary = result.summary
    assert summary is not None
    assert summary.decision == pb.DECISION_REMOTE
    assert summary.answered_by == pb.DECISION_LOCAL
    assert summary.fallback
    # The client sees a generic reason with an id; the backend's detail is in the log only.
    assert why not in summary.fallback_reason
    failure_id = failure_ids(summary.fallback_reason)[0]
    logged = [line for line in coordinator.process.log().splitlines() if failure_id in line]
    assert logged and why.removeprefix("remote: ") in logged[0], logged
    assert result.answer == coordinator.local.answer_for(UNSURE)  # type: ignore[union-attr]
    if mode == "midway":
        # Two remote chunks went out, then local starts over.
        assert [c.source for c in result.chunks[:3]] == [pb.DECISION_REMOTE] * 2 + [
            pb.DECISION_LOCAL
        ]
        assert result.chunks[2].discard_previous
    else:
        assert not any(chunk.discard_previous for chunk in result.chunks)


async def test_when_every_backend_fails_the_context_is_the_answer(
    coordinator: Coordinator,
) -> None:
    coordinator.remote.mode = "garbage"  # type: ignore[union-attr]
    coordinator.local.mode = "fail"  # type: ignore[union-attr]
    result = await ask(coordinator.target, UNSURE)
    summary = result.summary
    assert summary is not None
    assert summary.answered_by == pb.DECISION_NONE
    assert summary.fallback
    assert summary.fallback_reason.startswith("remote: the backend failed (failure id ")
    assert "local: the backend failed (failure id " in summary.fallback_reason
    assert "garbage" not in summary.fallback_reason and "HTTP 500" not in summary.fallback_reason
    assert result.answer.startswith("Note: no language model answered this query (remote: the")
    assert "HTTP 500" not in result.answer


# --- streaming -------------------------------------------------------------------------------


async def test_chunks_stream_as_the_backend_produces_them(coordinator: Coordinator) -> None:
    coordinator.local.chunk_delay_s = 0.2  # type: ignore[union-attr]
    result = await ask(coordinator.target, CONFIDENT)
    words = coordinator.local.answer_for(CONFIDENT).split(" ")  # type: ignore[union-attr]
    assert len(result.chunks) == len(words)
    assert result.order == ["chunk"] * len(words) + ["sources", "summary"]
    # The first chunk arrived long before the backend finished: nothing was buffered.
    assert result.summary_time - result.chunk_times[0] > 0.2 * (len(words) - 2)
    assert result.summary is not None
    timings = result.summary.timings
    assert 0 < timings.first_chunk_ms < timings.total_ms
    assert timings.search_ms > 0
    assert timings.generation_ms >= 0.2 * (len(words) - 1) * 1000


# --- breakers --------------------------------------------------------------------------------


async def test_the_local_breaker_opens_after_three_failures_and_closes_after_recovery(
    breaker_coordinator: Coordinator,
) -> None:
    local, remote = breaker_coordinator.local, breaker_coordinator.remote
    assert local is not None and remote is not None
    local.mode = "fail"
    for _ in range(3):
        result = await ask(breaker_coordinator.target, CONFIDENT, force=pb.DECISION_LOCAL)
        assert result.summary is not None
        assert result.summary.answered_by == pb.DECISION_REMOTE
        assert result.summary.fallback_reason.startswith("local: the backend failed")
    assert local.calls == 3

    # Open: local is not called, remote answers at once and the summary says why.
    result = await ask(breaker_coordinator.target, CONFIDENT, force=pb.DECISION_LOCAL)
    assert result.summary is not None
    assert result.summary.fallback_reason == "local: circuit breaker open"
    assert result.summary.answered_by == pb.DECISION_REMOTE
    assert local.calls == 3

    # After the recovery time one probe goes through; it succeeds and closes the breaker.
    local.mode = "answer"
    await asyncio.sleep(2.2)
    for _ in range(2):
        result = await ask(breaker_coordinator.target, CONFIDENT, force=pb.DECISION_LOCAL)
        assert result.summary is not None
        assert result.summary.answered_by == pb.DECISION_LOCAL
        assert not result.summary.fallback
    assert local.calls == 5


async def test_the_remote_breaker_opens_after_five_failures(
    breaker_coordinator: Coordinator,
) -> None:
    local, remote = breaker_coordinator.local, breaker_coordinator.remote
    assert local is not None and remote is not None
    local.mode, remote.mode = "answer", "garbage"
    remote.requests.clear()
    for _ in range(6):
        result = await ask(breaker_coordinator.target, UNSURE)
        assert result.summary is not None
        assert result.summary.decision == pb.DECISION_REMOTE
        assert result.summary.answered_by == pb.DECISION_LOCAL
    assert remote.calls == 5
    assert result.summary.fallback_reason == "remote: circuit breaker open"
    remote.mode = "answer"


# --- interactions and feedback ---------------------------------------------------------------


async def test_every_ask_is_stored(coordinator: Coordinator) -> None:
    result = await ask(coordinator.target, UNSURE, top_k=2)
    assert result.summary is not None
    stored = (
        await stub(coordinator.target).GetInteraction(
            pb.GetInteractionRequest(interaction_id=result.summary.interaction_id)
        )
    ).interaction
    assert stored.query == UNSURE
    assert stored.answer == result.answer
    assert stored.decision == stored.answered_by == pb.DECISION_REMOTE
    assert stored.reason == result.summary.reason
    assert stored.model == "big-remote"
    assert list(stored.collections) == [DOCS]
    assert [(c.collection, c.document_id) for c in stored.context] == [
        (p.collection, p.document_id) for p in result.summary.passages
    ]
    assert stored.latency_ms == pytest.approx(result.summary.timings.total_ms)
    assert not stored.HasField("rating")
    assert not stored.HasField("feedback_time")
    assert stored.value_score == 0


async def test_feedback_feeds_the_interactions_collection(
    coordinator: Coordinator, coordinator_search: ServerProcess
) -> None:
    client = stub(coordinator.target)
    question = f"What does the zorblat {uuid.uuid4().hex[:6]} machine do in the harbour?"
    result = await ask(coordinator.target, question)
    assert result.summary is not None
    interaction_id = result.summary.interaction_id

    rated = await client.RecordFeedback(
        pb.RecordFeedbackRequest(interaction_id=interaction_id, rating=1, outcome="helpful")
    )
    assert rated.interaction.rating == 1
    assert rated.interaction.value_score == 1
    assert rated.interaction.outcome == "helpful"
    again = await client.RecordFeedback(
        pb.RecordFeedbackRequest(interaction_id=interaction_id, rating=1, outcome="helpful")
    )
    assert again.interaction == rated.interaction  # idempotent: nothing changed

    search = search_grpc.SearchServiceStub(grpc.aio.insecure_channel(coordinator_search.target))
    document = await search.GetDocument(
        search_pb.GetDocumentRequest(collection="interactions", id=interaction_id)
    )
    assert document.document.text.startswith(f"Question: {question}\nAnswer: remote answer:")

    # A request that names no collection does not search the interactions (users' text is
    # untrusted); one that names it finds the rated answer.
    unnamed = await client.AugmentQuery(pb.AugmentQueryRequest(query=question, top_k=3))
    assert DOCS in unnamed.collections and "interactions" not in unnamed.collections
    assert VECTORS_ONLY not in unnamed.collections  # skipped: not searchable by text
    later = await client.AugmentQuery(
        pb.AugmentQueryRequest(query=question, top_k=3, collections=["interactions", DOCS])
    )
    found = [(p.collection, p.document_id) for p in later.passages]
    assert ("interactions", interaction_id) in found

    # Rated -1 it is never reused.
    await client.RecordFeedback(pb.RecordFeedbackRequest(interaction_id=interaction_id, rating=-1))
    await expect_error(
        search.GetDocument(
            search_pb.GetDocumentRequest(collection="interactions", id=interaction_id)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    later = await client.AugmentQuery(
        pb.AugmentQueryRequest(query=question, top_k=3, collections=["interactions", DOCS])
    )
    assert ("interactions", interaction_id) not in [
        (p.collection, p.document_id) for p in later.passages
    ]
    stored = (
        await client.GetInteraction(pb.GetInteractionRequest(interaction_id=interaction_id))
    ).interaction
    assert stored.rating == -1
    assert stored.value_score == -1
    assert stored.outcome == "helpful"  # unset outcome keeps the stored one


async def test_export_filters_by_rating_and_time(coordinator: Coordinator) -> None:
    client = stub(coordinator.target)
    start = Timestamp()
    start.FromDatetime(datetime.datetime.now(datetime.UTC) - datetime.timedelta(milliseconds=5))
    ids = []
    for rating in (1, -1, 0, None):
        result = await ask(coordinator.target, UNSURE, force=pb.DECISION_NONE)
        assert result.summary is not None
        ids.append(result.summary.interaction_id)
        if rating is not None:
            await client.RecordFeedback(
                pb.RecordFeedbackRequest(interaction_id=ids[-1], rating=rating)
            )
    end = Timestamp()
    end.FromDatetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1))

    async def export(**fields: object) -> list[str]:
        messages = await consume(
            client.ExportInteractions(
                pb.ExportInteractionsRequest(start_time=start, end_time=end, **fields)
            )
        )
        return [m.interaction.interaction_id for m in messages]

    assert await export() == ids  # oldest first, unrated included
    assert await export(ratings=[1]) == [ids[0]]
    assert await export(ratings=[-1, 0]) == [ids[1], ids[2]]
    assert await export(max_interactions=2) == ids[:2]
    everything = [
        m.interaction.interaction_id
        for m in await consume(client.ExportInteractions(pb.ExportInteractionsRequest()))
    ]
    assert everything[-4:] == ids
    later = Timestamp()
    later.FromDatetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1))
    assert (
        await consume(client.ExportInteractions(pb.ExportInteractionsRequest(start_time=later)))
        == []
    )


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "code", "fragment"),
    [
        ({"query": ""}, grpc.StatusCode.INVALID_ARGUMENT, "query is empty"),
        ({"query": "x" * 2001}, grpc.StatusCode.INVALID_ARGUMENT, "the limit is 2000"),
        (
            {"collections": ["no-such-collection"]},
            grpc.StatusCode.NOT_FOUND,
            "'no-such-collection' does not exist",
        ),
        (
            {"collections": ["Bad Name"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "is not a collection name",
        ),
        (
            {"max_context_tokens": 9000},
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_context_tokens is 9000; it must be 1 to 8192",
        ),
        ({"max_context_tokens": -5}, grpc.StatusCode.INVALID_ARGUMENT, "max_context_tokens is -5"),
        ({"top_k": 51}, grpc.StatusCode.INVALID_ARGUMENT, "top_k is 51; it must be 1 to 50"),
        ({"mode": 42}, grpc.StatusCode.INVALID_ARGUMENT, "mode is 42"),
    ],
)
async def test_bad_augment_requests(
    coordinator: Coordinator,
    request_fields: dict[str, object],
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    fields = {"query": "cats", **request_fields}
    await expect_error(
        stub(coordinator.target).AugmentQuery(pb.AugmentQueryRequest(**fields)), code, fragment
    )
    # Ask validates the same way (before any backend is called).
    await expect_error(
        consume(stub(coordinator.target).Ask(pb.AskRequest(**fields))), code, fragment
    )


async def test_bad_ask_requests(coordinator: Coordinator, bare_coordinator: Coordinator) -> None:
    await expect_error(
        consume(stub(coordinator.target).Ask(pb.AskRequest(query="cats", max_answer_tokens=5000))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_answer_tokens is 5000",
    )
    await expect_error(
        consume(stub(coordinator.target).Ask(pb.AskRequest(query="cats", force=9))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "force is 9",
    )
    await expect_error(
        consume(
            stub(bare_coordinator.target).Ask(pb.AskRequest(query="cats", force=pb.DECISION_LOCAL))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no local backend is configured",
    )


async def test_bad_interaction_requests(coordinator: Coordinator) -> None:
    client = stub(coordinator.target)
    unknown = str(uuid.uuid4())
    await expect_error(
        client.GetInteraction(pb.GetInteractionRequest(interaction_id=unknown)),
        grpc.StatusCode.NOT_FOUND,
        f"there is no interaction {unknown}",
    )
    await expect_error(
        client.GetInteraction(pb.GetInteractionRequest(interaction_id="42")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not an interaction id",
    )
    await expect_error(
        client.RecordFeedback(pb.RecordFeedbackRequest(interaction_id=unknown, rating=1)),
        grpc.StatusCode.NOT_FOUND,
        "there is no interaction",
    )
    await expect_error(
        client.RecordFeedback(pb.RecordFeedbackRequest(interaction_id=unknown, rating=3)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "rating is 3; it must be -1, 0 or +1",
    )
    await expect_error(
        client.RecordFeedback(
            pb.RecordFeedbackRequest(interaction_id=unknown, rating=1, outcome="x" * 4001)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "outcome has 4001 characters; the limit is 4000",
    )
    await expect_error(
        consume(client.ExportInteractions(pb.ExportInteractionsRequest(ratings=[2]))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ratings[0] is 2",
    )
    start, end = Timestamp(seconds=2_000_000_000), Timestamp(seconds=1_000_000_000)
    await expect_error(
        consume(
            client.ExportInteractions(pb.ExportInteractionsRequest(start_time=start, end_time=end))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "is not after start_time",
    )


def failure_ids(reason: str) -> list[str]:
    """The failure ids a generic fallback reason carries."""
    return re.findall(r"failure id ([0-9a-f]{16})", reason)
