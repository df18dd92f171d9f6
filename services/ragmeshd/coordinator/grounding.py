"""Grounded answers: the answer's [n] citations checked against the numbered passages as it
streams (citations of no passage are removed), and the answer that says the documents do not
contain it when only the local model could answer and no passage is relevant enough."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from ragmeshd.coordinator.answering import AnswerOutcome, ChunkEvent
from ragmeshd.coordinator.citations import CitationFilter
from ragmeshd.coordinator.routing import Route, Side
from ragmeshd.coordinator.sources import NOT_IN_DOCUMENTS


class Grounding:
    """Filters one Ask's answer chunks; `cited`, `removed` and `answer` once it has ended."""

    def __init__(self, source_count: int) -> None:
        self._source_count = source_count
        self._filter = CitationFilter(source_count)
        self._parts: list[str] = []

    @property
    def cited(self) -> list[int]:
        return self._filter.cited

    @property
    def removed(self) -> int:
        return self._filter.removed

    @property
    def answer(self) -> str:
        return "".join(self._parts)

    async def filter(self, events: AsyncIterator[ChunkEvent]) -> AsyncIterator[ChunkEvent]:
        """`events` with invalid citations removed; a backend that starts over starts a new
        filter. Context-only answers (NONE) pass unchanged: their numbers are the passages'."""
        last: ChunkEvent | None = None
        async for event in events:
            if event.discard_previous:
                self._filter = CitationFilter(self._source_count)
                self._parts.clear()
            text = event.text if event.source is Side.NONE else self._filter.feed(event.text)
            last = event
            if text or event.discard_previous:
                self._parts.append(text)
                yield ChunkEvent(text, event.source, event.discard_previous)
        if last is not None and last.source is not Side.NONE:
            rest = self._filter.finish()
            if rest:
                self._parts.append(rest)
                yield ChunkEvent(rest, last.source)


def says_not_in_documents(
    route: Route, forced: Side | None, confidence: float, threshold: float
) -> bool:
    """Whether the answer is NOT_IN_DOCUMENTS: the local model was chosen only because it is
    the only backend, and retrieval found nothing relevant enough."""
    return (
        forced is None
        and route.first is Side.LOCAL
        and route.fallback is None
        and confidence < threshold
    )


async def not_in_documents(
    confidence: float, threshold: float, outcome: AnswerOutcome
) -> AsyncIterator[ChunkEvent]:
    """The one chunk of that answer, recorded in `outcome` (answered by NONE)."""
    text = NOT_IN_DOCUMENTS.format(confidence=confidence, threshold=threshold)
    outcome.failures.append("local: no passage reaches the confidence threshold")
    outcome.first_chunk_at = time.perf_counter()
    outcome.parts.append(text)
    yield ChunkEvent(text, Side.NONE)
