"""The coordinator's own records of an interaction, independent of protobuf and SQL."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field

from ragmeshd.coordinator.routing import Side


@dataclass(frozen=True)
class ContextRef:
    """A passage an answer was built on."""

    collection: str
    document_id: str
    passage_index: int
    score: float


@dataclass
class Timings:
    """Where an Ask's time went, in milliseconds."""

    search_ms: float = 0.0
    routing_ms: float = 0.0
    first_chunk_ms: float = 0.0
    generation_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class NewInteraction:
    """What an Ask stores."""

    id: uuid.UUID
    query: str
    collections: list[str]
    decision: Side
    reason: str
    answered_by: Side
    model: str
    fallback: bool
    fallback_reason: str
    confidence: float
    context: list[ContextRef]
    answer: str
    timings: Timings = field(default_factory=Timings)
    # The id of the API key that asked ("" with keys turned off): its owner.
    owner_key_id: str = ""


@dataclass
class Interaction(NewInteraction):
    """A stored interaction with its feedback."""

    created_at: datetime.datetime = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC)
    )
    rating: int | None = None
    outcome: str = ""
    value_score: float = 0.0
    feedback_at: datetime.datetime | None = None


@dataclass(frozen=True)
class ExportFilter:
    """Which interactions ExportInteractions streams (conditions combine with AND)."""

    ratings: tuple[int, ...] = ()
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None
    limit: int = 0


def value_score(rating: int) -> float:
    """An interaction's value for reuse and fine-tuning: its latest rating."""
    return float(rating)
