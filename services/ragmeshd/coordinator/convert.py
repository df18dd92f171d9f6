"""Between the coordinator's records and the CoordinatorService messages."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmeshd.coordinator.budget import Passage
from ragmeshd.coordinator.records import Interaction, Timings
from ragmeshd.coordinator.routing import Side
from ragmeshd.coordinator.validation import InvalidRequestError

_DECISIONS = {
    Side.LOCAL: pb.DECISION_LOCAL,
    Side.REMOTE: pb.DECISION_REMOTE,
    Side.NONE: pb.DECISION_NONE,
}
_SIDES = {value: side for side, value in _DECISIONS.items()}


def decision(side: Side) -> pb.Decision:
    return _DECISIONS[side]


def side(value: int) -> Side | None:
    """The forced side of a request; None for DECISION_UNSPECIFIED."""
    return _SIDES.get(value)  # type: ignore[call-overload]


def passages(items: Sequence[Passage]) -> list[pb.ContextPassage]:
    return [
        pb.ContextPassage(
            collection=p.collection,
            document_id=p.document_id,
            text=p.text,
            passage_index=p.passage_index,
            score=p.score,
            token_count=p.token_count,
            truncated=p.truncated,
        )
        for p in items
    ]


def timings(value: Timings) -> pb.Timings:
    return pb.Timings(
        search_ms=value.search_ms,
        routing_ms=value.routing_ms,
        first_chunk_ms=value.first_chunk_ms,
        generation_ms=value.generation_ms,
        total_ms=value.total_ms,
    )


def timestamp(value: datetime.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def interaction(record: Interaction) -> pb.Interaction:
    message = pb.Interaction(
        interaction_id=str(record.id),
        create_time=timestamp(record.created_at),
        query=record.query,
        collections=record.collections,
        decision=decision(record.decision),
        reason=record.reason,
        answered_by=decision(record.answered_by),
        model=record.model,
        fallback=record.fallback,
        fallback_reason=record.fallback_reason,
        confidence=record.confidence,
        context=[
            pb.ContextReference(
                collection=ref.collection,
                document_id=ref.document_id,
                passage_index=ref.passage_index,
                score=ref.score,
            )
            for ref in record.context
        ],
        answer=record.answer,
        latency_ms=record.timings.total_ms,
        outcome=record.outcome,
        value_score=record.value_score,
        timings=timings(record.timings),
    )
    if record.rating is not None:
        message.rating = record.rating
    if record.feedback_at is not None:
        message.feedback_time.CopyFrom(timestamp(record.feedback_at))
    return message


def optional_time(message: pb.ExportInteractionsRequest, field: str) -> datetime.datetime | None:
    """The field's time, None when unset; InvalidRequestError when it is no valid Timestamp
    (seconds outside years 1 to 9999, nanos outside 0 to 999,999,999)."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    try:
        return stamp.ToDatetime(tzinfo=datetime.UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequestError(
            f"{field} is not a valid time (seconds={stamp.seconds}, nanos={stamp.nanos}):"
            " a Timestamp must lie between 0001-01-01 and 9999-12-31 with nanos 0 to 999999999"
        ) from exc
