"""The Qdrant backend (qdrant-client's AsyncQdrantClient).

A ragmesh collection is a Qdrant collection named `ragmesh_<name>` whose points are
passages: a named dense vector ("dense", cosine, the collection's HNSW settings) and a named
sparse vector ("keywords", with Qdrant's IDF modifier) of BM25 term weights computed by
ragmeshd/search/keywords.py. The payload holds the passage's document id, index and text,
the document's metadata under "metadata", and (on passage 0) the whole document text and its
passage count. HYBRID sends both rankings in one batch request and fuses them with the
service's own fusion (ragmeshd/search/fusion.py), as the pgvector backend does.

BM25 with Qdrant: Qdrant stores each passage's saturated term frequencies as the sparse
vector and multiplies by the IDF at query time, so the average passage length has to be known
when a passage is written. The collection's metadata keeps the passage count and total length
(`bm25_passages`, `bm25_length`); a write uses the average after it. Earlier passages keep the
average of their own write: on a collection that grew in batches the scores differ slightly
from exact BM25 (measured on SciFact in docs/benchmarks.md).

Qdrant has no multi-request transactions: writes go through qdrant_writes.py, which locks the
collection in this process and undoes a write that fails part-way; points are laid out by
qdrant_points.py. Embedded, "edge:DIR" (the default, under the state folder) runs Qdrant's own
engine in-process (qdrant_edge.py, qdrant-edge-py, beta); qdrant-client's local mode
(":memory:" or a directory) applies every request in pure Python instead.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from ragmeshd.search.backends.base import (
    CollectionExistsError,
    CollectionNotFoundError,
    InvalidPageTokenError,
    SearchBackend,
    StoreUnavailableError,
)
from ragmeshd.search.backends.qdrant_points import (
    DENSE,
    FIRST_PASSAGE,
    KEYWORDS,
    document_metadata,
    point_id,
)
from ragmeshd.search.backends.qdrant_writes import QdrantWriter
from ragmeshd.search.filters import QDRANT_METADATA_FIELD, to_qdrant
from ragmeshd.search.fusion import fuse_passages
from ragmeshd.search.keywords import sparse_query
from ragmeshd.search.records import (
    CollectionInfo,
    CollectionSpec,
    DocumentPage,
    DocumentSummary,
    Filter,
    FusionParams,
    Metadata,
    PassageHit,
    PreparedDocument,
    RankedHit,
    StoredDocument,
)
from ragmeshd.settings import SearchSettings

_log = logging.getLogger("ragmesh.search.qdrant")

COLLECTION_PREFIX = "ragmesh_"


def _qdrant_name(name: str) -> str:
    return COLLECTION_PREFIX + name


def _with(conditions: Filter, *extra: qm.Condition) -> qm.Filter | None:
    base = to_qdrant(conditions)
    if not extra:
        return base
    return qm.Filter(must=[*extra, *([base] if base is not None else [])])


@contextmanager
def _translated_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (CollectionNotFoundError, CollectionExistsError):
        raise
    except (OSError, ConnectionError) as exc:
        raise StoreUnavailableError(f"Qdrant is unreachable during {what}: {exc}") from exc
    except Exception as exc:
        # The HTTP and gRPC transports raise their own connection errors.
        if type(exc).__name__ in {"ResponseHandlingException", "ConnectError", "AioRpcError"}:
            raise StoreUnavailableError(f"Qdrant is unreachable during {what}: {exc}") from exc
        raise


def _api_key(key_file: str) -> str | None:
    """The Qdrant server's API key from its file (a mounted Secret), or None without one."""
    return Path(key_file).read_text().strip() if key_file else None


class QdrantBackend(SearchBackend):
    name = "qdrant"

    def __init__(self, settings: SearchSettings, location: str = "") -> None:
        """`location` overrides settings.qdrant_location (the search server resolves its
        empty default to a folder under the state directory: search/server.py)."""
        self._settings = settings
        self._location = location or settings.qdrant_location
        self._client: AsyncQdrantClient | None = None
        self._writer = QdrantWriter(settings)

    @property
    def client(self) -> AsyncQdrantClient:
        if self._client is None:
            raise StoreUnavailableError("the Qdrant client is not ready yet")
        return self._client

    async def start(self) -> None:
        location = self._location
        if not location:
            raise ValueError("the Qdrant backend needs a location (search.qdrant_location)")
        if location.startswith(("http://", "https://")):
            self._client = AsyncQdrantClient(
                url=location,
                prefer_grpc=self._settings.qdrant_prefer_grpc,
                api_key=_api_key(self._settings.qdrant_api_key_file),
            )
        elif location.startswith("edge:"):
            from ragmeshd.search.backends.qdrant_edge import EdgeClient

            self._client = cast(AsyncQdrantClient, EdgeClient(location.removeprefix("edge:")))
        elif location == ":memory:":
            self._client = AsyncQdrantClient(location=":memory:")
        else:
            self._client = AsyncQdrantClient(path=location)
        await self.ping()
        _log.info("qdrant ready", extra={"location": location})

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def ping(self) -> None:
        with _translated_errors("the health check"):
            await self.client.get_collections()

    # -- collections -------------------------------------------------------------------

    async def create_collection(self, spec: CollectionSpec) -> CollectionInfo:
        name = _qdrant_name(spec.name)
        created_at = datetime.datetime.now(datetime.UTC)
        with _translated_errors("creating a collection"):
            if await self.client.collection_exists(name):
                raise CollectionExistsError(spec.name)
            await self.client.create_collection(
                name,
                vectors_config={
                    DENSE: qm.VectorParams(
                        size=spec.dimensions,
                        distance=qm.Distance.COSINE,
                        hnsw_config=qm.HnswConfigDiff(
                            m=spec.hnsw_m, ef_construct=spec.hnsw_ef_construction
                        ),
                    )
                },
                sparse_vectors_config={KEYWORDS: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                metadata={
                    "ragmesh_name": spec.name,
                    "embedding_model": spec.embedding_model,
                    "created_at": created_at.isoformat(),
                },
            )
        return CollectionInfo(spec, 0, 0, created_at)

    async def list_collections(self) -> list[CollectionInfo]:
        with _translated_errors("listing collections"):
            response = await self.client.get_collections()
        names = sorted(
            c.name[len(COLLECTION_PREFIX) :]
            for c in response.collections
            if c.name.startswith(COLLECTION_PREFIX)
        )
        return [await self.get_collection(name) for name in names]

    async def get_collection(self, name: str) -> CollectionInfo:
        qdrant_name = await self._existing(name)
        with _translated_errors("reading a collection"):
            info = await self.client.get_collection(qdrant_name)
            documents = await self.client.count(
                qdrant_name, count_filter=qm.Filter(must=[FIRST_PASSAGE]), exact=True
            )
            passages = await self.client.count(qdrant_name, exact=True)
        vectors = info.config.params.vectors
        dense = vectors[DENSE] if isinstance(vectors, dict) else vectors
        assert dense is not None
        metadata: dict[str, Any] = info.config.metadata or {}
        hnsw = dense.hnsw_config
        m = hnsw.m if hnsw and hnsw.m is not None else info.config.hnsw_config.m
        ef = (
            hnsw.ef_construct
            if hnsw and hnsw.ef_construct is not None
            else info.config.hnsw_config.ef_construct
        )
        return CollectionInfo(
            CollectionSpec(name, dense.size, str(metadata.get("embedding_model", "")), m, ef),
            document_count=documents.count,
            passage_count=passages.count,
            created_at=datetime.datetime.fromisoformat(
                str(metadata.get("created_at", "1970-01-01T00:00:00+00:00"))
            ),
        )

    async def delete_collection(self, name: str) -> None:
        qdrant_name = await self._existing(name)
        with _translated_errors("deleting a collection"):
            await self.client.delete_collection(qdrant_name)

    async def _existing(self, name: str) -> str:
        qdrant_name = _qdrant_name(name)
        with _translated_errors("finding a collection"):
            if not await self.client.collection_exists(qdrant_name):
                raise CollectionNotFoundError(name)
        return qdrant_name

    # -- documents ---------------------------------------------------------------------

    async def upsert(self, name: str, documents: Sequence[PreparedDocument]) -> None:
        qdrant_name = await self._existing(name)
        with _translated_errors("storing documents"):
            await self._writer.upsert(self.client, qdrant_name, documents)

    async def delete_documents(self, name: str, ids: Sequence[str]) -> int:
        qdrant_name = await self._existing(name)
        with _translated_errors("deleting documents"):
            return await self._writer.delete(self.client, qdrant_name, ids)

    async def get_document(self, name: str, document_id: str) -> StoredDocument | None:
        qdrant_name = await self._existing(name)
        with _translated_errors("reading a document"):
            records = await self.client.retrieve(
                qdrant_name, ids=[point_id(document_id, 0)], with_payload=True
            )
        if not records or not records[0].payload:
            return None
        payload = records[0].payload
        return StoredDocument(
            document_id,
            str(payload["document_text"]),
            document_metadata(payload),
            int(payload["passage_count"]),
        )

    async def list_documents(
        self, name: str, source_prefix: str, page_token: str, limit: int
    ) -> DocumentPage:
        # Scrolls first passages in point order; the token is the next point's id. Qdrant has
        # no prefix match on a keyword field, so the prefix is tested here; each scroll asks
        # only for as many points as the page still needs, so the token stays exact.
        qdrant_name = await self._existing(name)
        offset: str | None = None
        if page_token:
            try:
                offset = str(uuid.UUID(page_token))
            except ValueError:
                raise InvalidPageTokenError() from None
        documents: list[DocumentSummary] = []
        with _translated_errors("listing documents"):
            while len(documents) < limit:
                records, following = await self.client.scroll(
                    qdrant_name,
                    scroll_filter=qm.Filter(must=[FIRST_PASSAGE]),
                    limit=limit - len(documents),
                    offset=offset,
                    with_payload=True,
                )
                for record in records:
                    payload = record.payload or {}
                    found = document_metadata(payload)
                    if str(found.get("source", "")).startswith(source_prefix):
                        documents.append(
                            DocumentSummary(
                                str(payload["document_id"]), found, int(payload["passage_count"])
                            )
                        )
                offset = None if following is None else str(following)
                if offset is None:
                    break
        return DocumentPage(documents, offset or "")

    async def count_documents(self, name: str, conditions: Filter) -> int:
        qdrant_name = await self._existing(name)
        with _translated_errors("counting documents"):
            result = await self.client.count(
                qdrant_name, count_filter=_with(conditions, FIRST_PASSAGE), exact=True
            )
        return int(result.count)

    # -- search ------------------------------------------------------------------------

    def _dense_request(self, vector: np.ndarray, limit: int, conditions: Filter) -> qm.QueryRequest:
        return qm.QueryRequest(
            query=vector.tolist(),
            using=DENSE,
            filter=_with(conditions),
            limit=limit,
            with_payload=True,
        )

    def _keyword_request(
        self, terms: qm.SparseVector, limit: int, conditions: Filter
    ) -> qm.QueryRequest:
        return qm.QueryRequest(
            query=terms, using=KEYWORDS, filter=_with(conditions), limit=limit, with_payload=True
        )

    async def dense_search(
        self, name: str, vector: np.ndarray, limit: int, conditions: Filter
    ) -> list[PassageHit]:
        qdrant_name = await self._existing(name)
        with _translated_errors("a dense search"):
            (response,) = await self.client.query_batch_points(
                qdrant_name, requests=[self._dense_request(vector, limit, conditions)]
            )
        return [_hit(point) for point in response.points]

    async def keyword_search(
        self, name: str, text: str, limit: int, conditions: Filter
    ) -> list[PassageHit]:
        qdrant_name = await self._existing(name)
        terms = _sparse_query(text)
        if terms is None:
            return []
        with _translated_errors("a keyword search"):
            (response,) = await self.client.query_batch_points(
                qdrant_name, requests=[self._keyword_request(terms, limit, conditions)]
            )
        return [_hit(point) for point in response.points]

    async def hybrid_search(
        self,
        name: str,
        vector: np.ndarray,
        text: str,
        limit: int,
        conditions: Filter,
        fusion: FusionParams,
    ) -> list[RankedHit]:
        terms = _sparse_query(text)
        if terms is None:
            return await super().hybrid_search(name, vector, text, limit, conditions, fusion)
        qdrant_name = await self._existing(name)
        with _translated_errors("a hybrid search"):
            dense, keyword = await self.client.query_batch_points(
                qdrant_name,
                requests=[
                    self._dense_request(vector, limit, conditions),
                    self._keyword_request(terms, limit, conditions),
                ],
            )
        return fuse_passages(
            [_hit(point) for point in dense.points],
            [_hit(point) for point in keyword.points],
            fusion,
        )[:limit]


def _sparse_query(text: str) -> qm.SparseVector | None:
    terms = sparse_query(text)
    if not terms.indices:
        return None
    return qm.SparseVector(indices=terms.indices, values=terms.values)


def _hit(point: qm.ScoredPoint) -> PassageHit:
    payload = point.payload or {}
    metadata: Metadata = dict(payload.get(QDRANT_METADATA_FIELD) or {})
    return PassageHit(
        document_id=str(payload["document_id"]),
        passage_index=int(payload["passage_index"]),
        text=str(payload["text"]),
        metadata=metadata,
        score=float(point.score),
    )
