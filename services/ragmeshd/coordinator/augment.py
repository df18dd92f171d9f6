"""Retrieving a query's context through the search service.

Every collection is searched in the requested mode; the hits are merged, de-duplicated and
cut to `top_k` and the token budget (budget.py), and turned into a prompt (prompt.py).

The retrieval confidence is the best cosine similarity of a passage to the query. DENSE
scores are exactly that; the scores of KEYWORD and HYBRID are not (HYBRID's are reciprocal
rank sums of about 0.03), so in those modes one extra DENSE search per collection (top 1)
measures it, concurrently with the main searches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmeshd.coordinator.budget import Passage, TokenCounter, select_context
from ragmeshd.coordinator.prompt import SYSTEM_PROMPT, user_prompt
from ragmeshd.coordinator.search_client import (
    CollectionNotFoundError,
    SearchClient,
    SearchForbiddenError,
    SearchRejectedError,
)
from ragmeshd.coordinator.sources import hit_metadata
from ragmeshd.settings import CoordinatorSettings

DENSE = search_pb.SEARCH_MODE_DENSE

_log = logging.getLogger("ragmesh.coordinator.augment")


@dataclass(frozen=True)
class AugmentParams:
    """A validated augmentation request."""

    query: str
    collections: list[str]  # empty: the configured default
    top_k: int
    max_tokens: int
    mode: search_pb.SearchMode


@dataclass(frozen=True)
class Context:
    """A query's context and prompt."""

    passages: list[Passage]
    token_count: int
    confidence: float
    collections: list[str]
    duplicate_count: int
    dropped_count: int
    search_ms: float
    system_prompt: str
    prompt: str


class Augmenter:
    def __init__(
        self, search: SearchClient, counter: TokenCounter, settings: CoordinatorSettings
    ) -> None:
        self._search = search
        self._counter = counter
        self._settings = settings

    async def _collections(self, requested: list[str], timeout_s: float) -> tuple[list[str], bool]:
        """The collections to search, and whether the caller named them."""
        if requested:
            return requested, True
        if self._settings.default_collections:
            return list(self._settings.default_collections), False
        every = await self._search.list_collections(timeout_s=timeout_s)
        # The interactions collection holds what users wrote (+1 feedback): untrusted, so it
        # is searched only when a request names it or the settings turn it on.
        if not self._settings.search_interactions_by_default:
            every = [name for name in every if name != self._settings.interactions_collection]
        return every, False

    async def augment(self, params: AugmentParams, timeout_s: float) -> Context:
        """Raises CollectionNotFoundError for a named collection that does not exist, and the
        search client's other errors."""
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s

        def left() -> float:
            return deadline - time.monotonic()

        collections, named = await self._collections(params.collections, left())
        dense_only = params.mode == DENSE
        calls = [
            self._search.search(
                name, params.query, top_k=params.top_k, mode=params.mode, timeout_s=left()
            )
            for name in collections
        ]
        if not dense_only:
            calls += [
                self._search.search(name, params.query, top_k=1, mode=DENSE, timeout_s=left())
                for name in collections
            ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        hits_by_collection = results[: len(collections)]
        dense_by_collection = hits_by_collection if dense_only else results[len(collections) :]

        _raise_first_error(results, named=named)
        passages = []
        searched = []
        confidence = 0.0
        for name, hits, dense_hits in zip(
            collections, hits_by_collection, dense_by_collection, strict=True
        ):
            if isinstance(hits, BaseException) or isinstance(dense_hits, BaseException):
                continue  # a default collection that could not be searched
            searched.append(name)
            passages += _passages(name, hits)
            confidence = max([confidence, *(hit.score for hit in dense_hits)])

        selection = select_context(
            passages,
            self._counter,
            top_k=params.top_k,
            max_tokens=params.max_tokens,
            min_partial_tokens=self._settings.min_partial_passage_tokens,
        )
        return Context(
            passages=selection.passages,
            token_count=selection.token_count,
            confidence=confidence,
            collections=searched,
            duplicate_count=selection.duplicate_count,
            dropped_count=selection.dropped_count,
            search_ms=(time.perf_counter() - started) * 1000,
            system_prompt=SYSTEM_PROMPT,
            prompt=user_prompt(params.query, selection.passages),
        )


def _raise_first_error(results: Sequence[object], *, named: bool) -> None:
    """Raise the most telling failure among the searches: a cancellation, a missing
    collection, a rejected request, then an unavailable service. Collections the caller did
    not name may be missing (deleted since they were listed) or refuse a text query (e.g.
    vectors of another model); they are skipped instead."""
    errors = [result for result in results if isinstance(result, BaseException)]
    ranked = sorted(
        (error for error in errors if named or not _skippable(error)),
        key=lambda error: (
            isinstance(error, Exception),
            not isinstance(error, CollectionNotFoundError),
            not isinstance(error, SearchRejectedError | SearchForbiddenError),
        ),
    )
    if ranked:
        raise ranked[0]


def _skippable(error: BaseException) -> bool:
    if isinstance(error, CollectionNotFoundError | SearchRejectedError | SearchForbiddenError):
        _log.warning("skipping a collection", extra={"error": str(error)})
        return True
    return False


def _passages(collection: str, hits: Sequence[search_pb.SearchHit]) -> list[Passage]:
    """A collection's hits as context passages, with their documents' metadata."""
    return [
        Passage(
            collection,
            hit.document_id,
            hit.passage_text,
            hit.passage_index,
            hit.score,
            metadata=hit_metadata(hit),
        )
        for hit in hits
    ]
