"""Ask's steps, each a function the handler calls in order: check the request, choose the
route, stream the answer (grounded), then record the interaction and summarise it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmeshd.coordinator import convert
from ragmeshd.coordinator.answering import AnswerOutcome, BackendSlot, ChunkEvent, stream_answer
from ragmeshd.coordinator.augment import Context
from ragmeshd.coordinator.grounding import not_in_documents, says_not_in_documents
from ragmeshd.coordinator.prompt import chat_messages
from ragmeshd.coordinator.records import ContextRef, NewInteraction, Timings
from ragmeshd.coordinator.routing import (
    ForcedBackendMissingError,
    Route,
    Side,
    check_forced,
    decide,
    needs_local_probe,
)
from ragmeshd.coordinator.validation import InvalidRequestError, check_enum, check_range
from ragmeshd.runtime.errors import invalid_argument
from ragmeshd.settings import CoordinatorSettings

_DECISIONS = tuple(pb.Decision.values())


@dataclass(frozen=True)
class AskOptions:
    """What an AskRequest asks for besides the retrieval (checked)."""

    forced: Side | None
    max_answer_tokens: int


@dataclass(frozen=True)
class Routing:
    """The route chosen for an answer, with the threshold it was chosen against."""

    route: Route
    forced: Side | None
    threshold: float
    routing_ms: float


def check_ask(
    request: pb.AskRequest, settings: CoordinatorSettings, slots: dict[Side, BackendSlot]
) -> AskOptions:
    """The forced backend and answer length, or INVALID_ARGUMENT saying what is wrong."""
    try:
        forced = convert.side(check_enum(request.force, "force", _DECISIONS))
        max_answer_tokens = check_range(
            request.max_answer_tokens,
            "max_answer_tokens",
            default=settings.default_answer_tokens,
            low=1,
            high=settings.max_answer_tokens,
        )
        check_forced(
            forced,
            local_configured=Side.LOCAL in slots,
            remote_configured=Side.REMOTE in slots,
        )
    except (InvalidRequestError, ForcedBackendMissingError) as exc:
        raise invalid_argument(str(exc)) from None
    return AskOptions(forced, max_answer_tokens)


async def choose_route(
    forced: Side | None, confidence: float, threshold: float, slots: dict[Side, BackendSlot]
) -> Routing:
    """routing.decide, probing the local backend's health only when the choice needs it."""
    started = time.perf_counter()
    local = slots.get(Side.LOCAL)
    local_healthy = None
    if local is not None and needs_local_probe(
        forced, confidence, threshold, local_configured=True
    ):
        local_healthy = await local.probe.healthy()
    route = decide(
        forced,
        confidence,
        threshold,
        local_configured=local is not None,
        remote_configured=Side.REMOTE in slots,
        local_healthy=local_healthy,
    )
    return Routing(route, forced, threshold, (time.perf_counter() - started) * 1000)


def answer_events(
    routing: Routing,
    query: str,
    found: Context,
    slots: dict[Side, BackendSlot],
    *,
    max_tokens: int,
    deadline: float,
    outcome: AnswerOutcome,
) -> AsyncIterator[ChunkEvent]:
    """The answer's chunks: "not in the documents" when only a model that should not guess
    would answer, else the routed backend's (with fallback)."""
    if says_not_in_documents(routing.route, routing.forced, found.confidence, routing.threshold):
        return not_in_documents(found.confidence, routing.threshold, outcome)
    return stream_answer(
        routing.route,
        slots,
        chat_messages(query, found.passages),
        found.passages,
        max_tokens=max_tokens,
        deadline=deadline,
        outcome=outcome,
    )


def chunk_response(event: ChunkEvent) -> pb.AskResponse:
    return pb.AskResponse(
        chunk=pb.AnswerChunk(
            text=event.text,
            source=convert.decision(event.source),
            discard_previous=event.discard_previous,
        )
    )


def interaction_record(
    query: str,
    found: Context,
    routing: Routing,
    outcome: AnswerOutcome,
    *,
    answer: str,
    started: float,
    owner_key_id: str,
) -> NewInteraction:
    """The interaction to store; `started` is the call's time.perf_counter() at arrival."""
    route = routing.route
    first_chunk = outcome.first_chunk_at or time.perf_counter()
    fallback = outcome.answered_by is not route.first
    return NewInteraction(
        id=uuid.uuid4(),
        query=query,
        collections=found.collections,
        decision=route.first,
        reason=route.reason,
        answered_by=outcome.answered_by,
        model=outcome.model,
        fallback=fallback,
        fallback_reason="; ".join(outcome.failures) if fallback else "",
        confidence=found.confidence,
        context=[
            ContextRef(p.collection, p.document_id, p.passage_index, p.score)
            for p in found.passages
        ],
        answer=answer,
        timings=Timings(
            search_ms=found.search_ms,
            routing_ms=routing.routing_ms,
            first_chunk_ms=(first_chunk - started) * 1000,
            generation_ms=outcome.generation_ms,
            total_ms=(time.perf_counter() - started) * 1000,
        ),
        owner_key_id=owner_key_id,
    )


def summary_response(record: NewInteraction, found: Context) -> pb.AskResponse:
    return pb.AskResponse(
        summary=pb.AskSummary(
            interaction_id=str(record.id),
            decision=convert.decision(record.decision),
            reason=record.reason,
            answered_by=convert.decision(record.answered_by),
            model=record.model,
            fallback=record.fallback,
            fallback_reason=record.fallback_reason,
            confidence=record.confidence,
            passages=convert.passages(found.passages),
            timings=convert.timings(record.timings),
        )
    )
