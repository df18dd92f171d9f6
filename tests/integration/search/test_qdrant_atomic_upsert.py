"""UpsertDocuments is all or nothing on Qdrant too (issue 25): a write that Qdrant's engine
refuses part-way, after its first batch of points is stored, leaves the collection exactly as
it was: the replaced document's passages, vectors and text, no new document, the same BM25
statistics. Run on the default engine (qdrant-edge) and on qdrant-client's local mode; the
failure is the engine's own (a vector of the wrong size in the second batch), which the
service's validation would have refused earlier, so the backend is called directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragmeshd.search.backends.qdrant import QdrantBackend
from ragmeshd.search.backends.qdrant_writes import BATCH_POINTS
from ragmeshd.search.records import CollectionSpec, Passage, PreparedDocument
from ragmeshd.settings import SearchSettings

pytestmark = pytest.mark.integration

DIMENSIONS = 8
_rng = np.random.default_rng(25)


def _document(document_id: str, words: list[str], dimensions: int = DIMENSIONS) -> PreparedDocument:
    vectors = _rng.normal(size=(len(words), dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    passages = [Passage(i, f"{word} passage {i}", vectors[i]) for i, word in enumerate(words)]
    return PreparedDocument(document_id, " ".join(p.text for p in passages), {}, passages)


@pytest.fixture(params=["edge", "local"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QdrantBackend]:
    location = f"edge:{tmp_path / 'qdrant-edge'}" if request.param == "edge" else ":memory:"
    store = QdrantBackend(SearchSettings(), location)
    await store.start()
    await store.create_collection(CollectionSpec("c", DIMENSIONS, "test", 16, 64))
    try:
        yield store
    finally:
        await store.close()


async def _state(store: QdrantBackend, probe: PreparedDocument) -> dict[str, Any]:
    """Everything a reader can see of the collection, and its BM25 statistics."""
    info = await store.get_collection("c")
    qdrant = await store.client.get_collection("ragmesh_c")
    dense = await store.dense_search("c", probe.passages[1].vector, 3, ())
    return {
        "documents": info.document_count,
        "passages": info.passage_count,
        "statistics": {k: v for k, v in (qdrant.config.metadata or {}).items() if "bm25" in k},
        "a": await store.get_document("c", "a"),
        "b": await store.get_document("c", "b"),
        "new": await store.get_document("c", "new"),
        "dense": [(h.document_id, h.passage_index, h.text, round(h.score, 5)) for h in dense],
        "old words": [h.document_id for h in await store.keyword_search("c", "alpha", 5, ())],
        "new words": [h.document_id for h in await store.keyword_search("c", "omega", 5, ())],
    }


async def test_a_write_refused_after_its_first_batch_leaves_the_collection_unchanged(
    backend: QdrantBackend,
) -> None:
    a = _document("a", ["alpha", "beta", "gamma"])
    await backend.upsert("c", [a, _document("b", ["delta", "epsilon"])])
    before = await _state(backend, a)
    assert before["documents"] == 2 and before["passages"] == 5
    assert before["dense"][0][:2] == ("a", 1) and before["old words"] == ["a"]

    # a again with more passages than one batch, a new document, then a point the engine
    # refuses: the first BATCH_POINTS points of `a` are stored before the error.
    replacement = _document("a", ["omega"] * (BATCH_POINTS + 10))
    refused = _document("z", ["zeta"], dimensions=3)
    with pytest.raises(Exception, match=r"[Dd]imension"):
        await backend.upsert("c", [replacement, _document("new", ["eta"]), refused])

    assert await _state(backend, a) == before
    assert before["a"] is not None and before["a"].passage_count == 3


async def test_a_stored_document_larger_than_a_batch_is_restored_whole(
    backend: QdrantBackend,
) -> None:
    # More stored passages than one scroll page and one write request: the read-back pages
    # through them all, and the first batch of the failed write overwrote most of them.
    a = _document("a", ["alpha"] * (BATCH_POINTS + 5))
    await backend.upsert("c", [a, _document("b", ["delta"])])
    before = await _state(backend, a)
    assert before["passages"] == BATCH_POINTS + 6
    replacement = _document("a", ["omega"] * (BATCH_POINTS + 1))
    with pytest.raises(Exception, match=r"[Dd]imension"):
        await backend.upsert("c", [replacement, _document("z", ["zeta"], dimensions=3)])
    assert await _state(backend, a) == before
    last = a.passages[-1]
    (hit,) = await backend.dense_search("c", last.vector, 1, ())
    assert (hit.document_id, hit.passage_index, hit.text) == ("a", last.index, last.text)
