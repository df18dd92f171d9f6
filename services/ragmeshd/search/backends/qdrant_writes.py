"""UpsertDocuments and DeleteDocuments on Qdrant, all or nothing as far as one search process
can make them.

Qdrant has no multi-request transactions, and an upsert is several requests: its points in
batches of BATCH_POINTS (a Qdrant server refuses a request over 32 MiB; 20,000 passages of
384 floats are more), the removal of passages a replaced document no longer has, and the
collection's BM25 statistics (passage count and total length, which the sparse vectors of the
next write depend on). Even one request is not atomic: Qdrant's engine (qdrant-edge) keeps
points of a batch it refuses part-way (4 of 6 when the sixth had the wrong size). So:

- one asyncio lock per collection serialises this process's writes, so two writes never
  read the same statistics and each overwrite the other's;
- before writing, the stored points of the documents being replaced are read back whole
  (payload and both vectors), with the statistics;
- if anything fails after that (an error from Qdrant, a point it refuses, the call
  cancelled), the points written are deleted, the points read back are written again and
  the statistics restored, and then the error is raised: the collection is as it was.

What this does not cover, and docs/api.md says: a Search during the write sees it in progress
(some new passages, or old and new ones), as it does during the undoing; search replicas
sharing one Qdrant server do not take each other's lock (their statistics can drift, and two
writes of one document id at once can mix both versions' passages); and if the undoing itself
fails (Qdrant unreachable), the collection may hold part of the write, which is logged as an
error naming the collection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from ragmeshd.search.backends.qdrant_points import (
    DENSE,
    FIRST_PASSAGE,
    KEYWORDS,
    document_filter,
    payload,
    point_id,
)
from ragmeshd.search.keywords import passage_terms, sparse_passage
from ragmeshd.search.records import PreparedDocument
from ragmeshd.settings import SearchSettings

_log = logging.getLogger("ragmesh.search.qdrant")

_Item = TypeVar("_Item")

# Points per write request: 256 passages of 384 floats are ~1 MiB of JSON, far below a Qdrant
# server's 32 MiB request limit.
BATCH_POINTS = 256


def _batches(items: Sequence[_Item], size: int) -> Iterator[list[_Item]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class QdrantWriter:
    """The write path of one search process's Qdrant backend."""

    def __init__(self, settings: SearchSettings, batch_points: int = BATCH_POINTS) -> None:
        self._settings = settings
        self._batch_points = batch_points
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, qdrant_name: str) -> asyncio.Lock:
        return self._locks.setdefault(qdrant_name, asyncio.Lock())

    async def upsert(
        self, client: AsyncQdrantClient, qdrant_name: str, documents: Sequence[PreparedDocument]
    ) -> None:
        async with self._lock(qdrant_name):
            previous = await passage_counts(client, qdrant_name, [d.id for d in documents])
            before = await self._stored_points(client, qdrant_name, list(previous))
            statistics = await _statistics(client, qdrant_name)
            points, written = self._points(documents, before, statistics)
            stale = [
                point_id(document.id, index)
                for document in documents
                for index in range(len(document.passages), previous.get(document.id, 0))
            ]
            try:
                for batch in _batches(points, self._batch_points):
                    await client.upsert(qdrant_name, points=batch, wait=True)
                for ids in _batches(stale, self._batch_points):
                    await client.delete(
                        qdrant_name, points_selector=qm.PointIdsList(points=ids), wait=True
                    )
                await _set_statistics(client, qdrant_name, *written)
            except BaseException:
                await self._undo(client, qdrant_name, points, before, statistics)
                raise

    def _points(
        self,
        documents: Sequence[PreparedDocument],
        before: Sequence[qm.Record],
        statistics: tuple[int, int],
    ) -> tuple[list[qm.PointStruct], tuple[int, int]]:
        """The points of `documents`, their sparse vectors weighted by the average passage
        length after the write, and the statistics after it."""
        s = self._settings
        counted = [[passage_terms(p.text) for p in d.passages] for d in documents]
        passages = statistics[0] - len(before) + sum(len(d.passages) for d in documents)
        length = (
            statistics[1]
            - sum(int((r.payload or {}).get("length", 0)) for r in before)
            + sum(t.length for terms in counted for t in terms)
        )
        average = max(length / passages, 1.0) if passages > 0 else 1.0
        points = []
        for document, terms in zip(documents, counted, strict=True):
            for passage, passage_counted in zip(document.passages, terms, strict=True):
                sparse = sparse_passage(
                    passage_counted, k1=s.bm25_k1, b=s.bm25_b, avg_length=average
                )
                vector = {
                    DENSE: passage.vector.tolist(),
                    KEYWORDS: qm.SparseVector(indices=sparse.indices, values=sparse.values),
                }
                points.append(
                    qm.PointStruct(
                        id=point_id(document.id, passage.index),
                        vector=vector,
                        payload=payload(document, passage, passage_counted.length),
                    )
                )
        return points, (passages, length)

    async def _undo(
        self,
        client: AsyncQdrantClient,
        qdrant_name: str,
        points: Sequence[qm.PointStruct],
        before: Sequence[qm.Record],
        statistics: tuple[int, int],
    ) -> None:
        """Put the collection back as it was before a write that failed part-way."""
        try:
            for ids in _batches([p.id for p in points], self._batch_points):
                await client.delete(
                    qdrant_name, points_selector=qm.PointIdsList(points=ids), wait=True
                )
            restored = [
                qm.PointStruct(id=r.id, vector=r.vector or {}, payload=r.payload) for r in before
            ]
            for batch in _batches(restored, self._batch_points):
                await client.upsert(qdrant_name, points=batch, wait=True)
            await _set_statistics(client, qdrant_name, *statistics)
        except Exception:
            _log.exception(
                "undoing a failed upsert failed: the collection may hold part of it",
                extra={"collection": qdrant_name},
            )

    async def _stored_points(
        self, client: AsyncQdrantClient, qdrant_name: str, ids: Sequence[str]
    ) -> list[qm.Record]:
        """Every stored point of documents `ids`, with its payload and vectors."""
        if not ids:
            return []
        found: list[qm.Record] = []
        offset: Any = None
        while True:
            records, offset = await client.scroll(
                qdrant_name,
                scroll_filter=document_filter(ids),
                limit=self._batch_points,
                offset=offset,
                with_payload=True,
                with_vectors=True,
            )
            found.extend(records)
            if offset is None:
                return found

    async def delete(self, client: AsyncQdrantClient, qdrant_name: str, ids: Sequence[str]) -> int:
        """Lower the statistics, then delete documents `ids` in one request; if that fails,
        the statistics are put back."""
        async with self._lock(qdrant_name):
            stored = await passage_counts(client, qdrant_name, ids)
            if not stored:
                return 0
            removed_length, offset = 0, None
            while True:
                records, offset = await client.scroll(
                    qdrant_name,
                    scroll_filter=document_filter(list(stored)),
                    limit=self._batch_points,
                    offset=offset,
                    with_payload=["length"],
                )
                removed_length += sum(int((r.payload or {}).get("length", 0)) for r in records)
                if offset is None:
                    break
            statistics = await _statistics(client, qdrant_name)
            passages, length = statistics
            await _set_statistics(
                client, qdrant_name, passages - sum(stored.values()), length - removed_length
            )
            try:
                await client.delete(
                    qdrant_name,
                    points_selector=qm.FilterSelector(filter=document_filter(list(stored))),
                    wait=True,
                )
            except BaseException:
                await self._undo(client, qdrant_name, [], [], statistics)
                raise
            return len(stored)


async def passage_counts(
    client: AsyncQdrantClient, qdrant_name: str, ids: Sequence[str]
) -> dict[str, int]:
    """How many passages each stored document of `ids` has."""
    records, _ = await client.scroll(
        qdrant_name,
        scroll_filter=document_filter(ids, FIRST_PASSAGE),
        limit=len(ids),
        with_payload=["document_id", "passage_count"],
    )
    return {
        str(r.payload["document_id"]): int(r.payload["passage_count"]) for r in records if r.payload
    }


async def _statistics(client: AsyncQdrantClient, qdrant_name: str) -> tuple[int, int]:
    """The collection's BM25 statistics: its passage count and total length in terms."""
    info = await client.get_collection(qdrant_name)
    metadata: dict[str, Any] = info.config.metadata or {}
    return int(metadata.get("bm25_passages", 0)), int(metadata.get("bm25_length", 0))


async def _set_statistics(
    client: AsyncQdrantClient, qdrant_name: str, passages: int, length: int
) -> None:
    await client.update_collection(
        qdrant_name, metadata={"bm25_passages": passages, "bm25_length": length}
    )
