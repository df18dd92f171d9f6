"""The SearchService RPC handlers: validate, split and embed, call the backend, rank."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import numpy as np

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd.runtime import metrics
from ragmeshd.runtime.errors import RpcFailure, invalid_argument, not_found, unavailable
from ragmeshd.runtime.server import call_timeout
from ragmeshd.runtime.tenancy import (
    ACL_KEY,
    CollectionDenied,
    check_collection,
    current,
    visible_collections,
)
from ragmeshd.runtime.tracing import tracer
from ragmeshd.runtime.work_meter import WorkMeter, presented_key_of
from ragmeshd.search import validation
from ragmeshd.search.backends.base import (
    CollectionExistsError,
    CollectionNotFoundError,
    InvalidPageTokenError,
    SearchBackend,
    StoreTimeoutError,
    StoreUnavailableError,
)
from ragmeshd.search.chunking import PassageSplitter
from ragmeshd.search.convert import (
    MODES,
    collection_to_proto,
    fill_metadata,
    hit_to_proto,
    summary_to_proto,
)
from ragmeshd.search.embedder import (
    Embedder,
    EmbeddingsOverloadedError,
    EmbeddingsRejectedError,
    EmbeddingsTimeoutError,
    EmbeddingsUnavailableError,
)
from ragmeshd.search.filters import acl_groups, parse_filter
from ragmeshd.search.fusion import one_per_document, ranked_dense, ranked_keyword
from ragmeshd.search.paging import decode_token, encode_token
from ragmeshd.search.records import (
    CollectionInfo,
    CollectionSpec,
    Filter,
    Metadata,
    Mode,
    Passage,
    PreparedDocument,
    RankedHit,
    Visible,
)
from ragmeshd.search.result_cache import InvalidationError, ResultCache
from ragmeshd.search.uploads import extract_uploads, receive_files, upload_response
from ragmeshd.search.validation import DocumentInput, InvalidRequestError
from ragmeshd.settings import SearchSettings, ServerSettings

# Recorded as a collection's model when it was created with explicit dimensions only.
EXTERNAL_MODEL = "external"


@contextlib.contextmanager
def _as_rpc_failures() -> Iterator[None]:
    """Domain errors to gRPC status codes with the domain's message."""
    try:
        yield
    except (InvalidRequestError, InvalidPageTokenError) as exc:
        raise invalid_argument(str(exc)) from None
    except CollectionNotFoundError as exc:
        raise not_found(str(exc)) from None
    except CollectionExistsError as exc:
        raise RpcFailure(grpc.StatusCode.ALREADY_EXISTS, str(exc)) from None
    except EmbeddingsOverloadedError as exc:
        # Passed on as overload, so callers back off (Envoy does not retry it).
        raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
    except (StoreUnavailableError, EmbeddingsUnavailableError) as exc:
        raise unavailable(str(exc)) from None
    except (StoreTimeoutError, EmbeddingsTimeoutError) as exc:
        raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from None
    except EmbeddingsRejectedError as exc:
        raise RpcFailure(exc.code, f"the embeddings service refused the text: {exc}") from None
    except InvalidationError as exc:
        raise unavailable(str(exc)) from None
    except CollectionDenied as exc:
        raise RpcFailure(grpc.StatusCode.PERMISSION_DENIED, str(exc)) from None


def _visibility() -> Filter:
    """The condition that keeps documents the call's key may not see out of the query
    itself (before top-k); empty when it sees every document."""
    principal = current()
    groups = principal.document_groups() if principal is not None else None
    return () if groups is None else (Visible(groups),)


def _may_see(metadata: Metadata) -> bool:
    """The same test as _visibility, for one document already read."""
    principal = current()
    groups = principal.document_groups() if principal is not None else None
    if groups is None or ACL_KEY not in metadata:
        return True
    return not set(acl_groups(metadata[ACL_KEY])).isdisjoint(groups)


def _collection(name: str, field: str = "name") -> str:
    """A valid collection name the call's key may use (runtime/tenancy.py)."""
    checked = validation.check_collection_name(name, field)
    check_collection(checked)
    return checked


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(
        self,
        settings: SearchSettings,
        server_settings: ServerSettings,
        backend: SearchBackend,
        embedder: Embedder,
        results: ResultCache | None = None,
    ) -> None:
        self._settings = settings
        # Search results, invalidated by every write (ragmeshd/search/result_cache.py).
        self._results = results or ResultCache(None, max_bytes=0, ttl_s=0)
        self._default_deadline_s = server_settings.default_deadline_s
        # Charges writes and uploads to a limited key's bucket (runtime/work_meter.py).
        self.meter = WorkMeter(None)
        self._backend = backend
        self._embedder = embedder
        # Set once the backend is connected and the tokenizer loaded.
        self._splitter: PassageSplitter | None = None
        self._ready = False
        # Kept current by the server's health loop: whether the store answers.
        self.store_down_since: float | None = None

    def attach(self, splitter: PassageSplitter) -> None:
        self._splitter = splitter
        self._ready = True

    def _check_available(self) -> PassageSplitter:
        if not self._ready or self._splitter is None:
            raise unavailable("the search service is still starting; retry shortly")
        if self.store_down_since is not None:
            down_s = time.monotonic() - self.store_down_since
            raise unavailable(
                f"the {self._backend.name} store is not answering (for {down_s:.0f} s); the"
                " service reconnects by itself, retry shortly"
            )
        return self._splitter

    # -- collections -------------------------------------------------------------------

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCollectionResponse:
        self._check_available()
        s = self._settings
        with _as_rpc_failures():
            name = _collection(request.name)
            validation.check_dimensions(request.dimensions, s.max_vector_dimensions)
            index = request.index_settings
            m = index.hnsw_m or s.hnsw_m
            ef_construction = index.hnsw_ef_construction or s.hnsw_ef_construction
            validation.check_index_settings(m, ef_construction)
            dimensions, model = request.dimensions, request.embedding_model
            if dimensions == 0:
                info = await self._embedder.info(call_timeout(context, self._default_deadline_s))
                dimensions, model = info.dimensions, model or info.model
            spec = CollectionSpec(name, dimensions, model or EXTERNAL_MODEL, m, ef_construction)
            created = await self._backend.create_collection(spec)
            await self._results.invalidate(name)  # a dropped collection's name may come back
        return pb.CreateCollectionResponse(collection=collection_to_proto(created))

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        self._check_available()
        with _as_rpc_failures():
            collections = await self._backend.list_collections()
        allowed = set(visible_collections(c.spec.name for c in collections))
        return pb.ListCollectionsResponse(
            collections=[collection_to_proto(c) for c in collections if c.spec.name in allowed]
        )

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCollectionResponse:
        self._check_available()
        with _as_rpc_failures():
            info = await self._backend.get_collection(_collection(request.name))
        return pb.GetCollectionResponse(collection=collection_to_proto(info))

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        self._check_available()
        with _as_rpc_failures():
            name = _collection(request.name)
            await self._backend.delete_collection(name)
            await self._results.invalidate(name)
        return pb.DeleteCollectionResponse()

    # -- documents ---------------------------------------------------------------------

    async def UpsertDocuments(
        self, request: pb.UpsertDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertDocumentsResponse:
        splitter = self._check_available()
        # 1 KiB written is one unit of work; Envoy charged the call's first one.
        written_kib = math.ceil(request.ByteSize() / 1024)
        await self.meter.require(presented_key_of(context), written_kib - 1, f"{written_kib} KiB")
        with _as_rpc_failures():
            name = _collection(request.collection, "collection")
            inputs = validation.check_documents(request.documents, self._settings)
            collection = await self._backend.get_collection(name)
            for index, document in enumerate(inputs):
                if document.vector is not None:
                    validation.check_vector_dimensions(
                        document.vector, collection.spec.dimensions, f"documents[{index}].vector"
                    )
            documents = await self._prepare(
                inputs, collection, splitter, call_timeout(context, self._default_deadline_s)
            )
            await self._backend.upsert(name, documents)
            await self._results.invalidate(name)
        return pb.UpsertDocumentsResponse(
            document_count=len(documents),
            passage_count=sum(len(document.passages) for document in documents),
        )

    async def _prepare(
        self,
        inputs: list[DocumentInput],
        collection: CollectionInfo,
        splitter: PassageSplitter,
        timeout_s: float,
    ) -> list[PreparedDocument]:
        """Split the texts without a vector into passages (a client's passages only where one
        is longer than the model's window) and embed them all, as a bulk write."""

        def split() -> list[list[tuple[str, Metadata]]]:
            pieces: list[list[tuple[str, Metadata]]] = []
            for document in inputs:
                if document.vector is not None:
                    pieces.append([])
                elif document.passages is None:
                    pieces.append([(piece, {}) for piece in splitter.split(document.text)])
                else:
                    pieces.append(
                        [
                            (piece, passage.metadata)
                            for passage in document.passages
                            for piece in splitter.split(passage.text)
                        ]
                    )
            return pieces

        pieces = await asyncio.to_thread(split)
        vectors = np.zeros((0, collection.spec.dimensions), dtype=np.float32)
        flat = [text for document_pieces in pieces for text, _ in document_pieces]
        if flat:
            vectors = await self._embed(flat, collection, timeout_s, bulk=True)
        documents, next_piece = [], 0
        for document, document_pieces in zip(inputs, pieces, strict=True):
            if document.vector is not None:
                passages = [Passage(0, document.text, document.vector)]
            else:
                passages = [
                    Passage(index, text, vectors[next_piece + index], metadata)
                    for index, (text, metadata) in enumerate(document_pieces)
                ]
                next_piece += len(document_pieces)
            documents.append(
                PreparedDocument(document.id, document.text, document.metadata, passages)
            )
        return documents

    async def _embed(
        self, texts: list[str], collection: CollectionInfo, timeout_s: float, *, bulk: bool = False
    ) -> np.ndarray:
        embeddings = await self._embedder.embed(texts, timeout_s, bulk=bulk)
        if embeddings.dimensions != collection.spec.dimensions:
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"collection {collection.spec.name!r} holds {collection.spec.dimensions}-d"
                f" vectors but the embeddings service's model ({embeddings.model}) makes"
                f" {embeddings.dimensions}-d ones: send precomputed vectors of"
                f" {collection.spec.dimensions} values",
            )
        return embeddings.vectors

    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentsResponse:
        self._check_available()
        with _as_rpc_failures():
            name = _collection(request.collection, "collection")
            if request.source_prefix and request.ids:
                raise InvalidRequestError("give ids or source_prefix, not both")
            if request.source_prefix:
                deleted = await self._delete_by_source(
                    name, validation.check_source_prefix(request.source_prefix)
                )
            else:
                ids = validation.check_ids(request.ids, self._settings)
                deleted = await self._backend.delete_documents(name, ids)
            await self._results.invalidate(name)
        return pb.DeleteDocumentsResponse(deleted_count=deleted)

    async def UploadFiles(
        self,
        request_iterator: AsyncIterator[pb.UploadFilesRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadFilesResponse:
        splitter = self._check_available()
        s = self._settings
        with _as_rpc_failures():
            collection_name, files = await receive_files(request_iterator, s)
            uploaded_kib = math.ceil(sum(len(upload.data) for upload in files) / 1024)
            await self.meter.require(
                presented_key_of(context), uploaded_kib - 1, f"{uploaded_kib} KiB uploaded"
            )
            name = _collection(collection_name, "collection")
            collection = await self._backend.get_collection(name)
            inputs = await asyncio.to_thread(extract_uploads, files, s, splitter.count_tokens)
            documents = await self._prepare(
                inputs, collection, splitter, call_timeout(context, self._default_deadline_s)
            )
            await self._backend.upsert(name, documents)
            await self._results.invalidate(name)
        return upload_response(documents)

    async def _delete_by_source(self, name: str, prefix: str) -> int:
        """Delete every document whose source starts with `prefix`, a page at a time (each
        page's delete is atomic, the whole is not: a failure leaves the rest for a retry)."""
        deleted = 0
        while True:
            page = await self._backend.list_documents(
                name, prefix, "", self._settings.max_ids_per_delete
            )
            if not page.documents:
                return deleted
            deleted += await self._backend.delete_documents(
                name, [document.id for document in page.documents]
            )

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDocumentsResponse:
        self._check_available()
        with _as_rpc_failures():
            name = _collection(request.collection, "collection")
            query = validation.check_list(request)
            page = await self._backend.list_documents(
                name, query.source_prefix, decode_token(query.page_token), query.page_size
            )
        return pb.ListDocumentsResponse(
            documents=[
                summary_to_proto(document)
                for document in page.documents
                if _may_see(document.metadata)
            ],
            next_page_token=encode_token(page.next_token),
        )

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDocumentResponse:
        self._check_available()
        with _as_rpc_failures():
            name = _collection(request.collection, "collection")
            document_id = validation.check_document_id(
                request.id, "id", self._settings.max_document_id_chars
            )
            stored = await self._backend.get_document(name, document_id)
        if stored is None or not _may_see(stored.metadata):
            raise not_found(f"document {request.id!r} is not in collection {request.collection!r}")
        message = pb.Document(id=stored.id, text=stored.text)
        fill_metadata(message.metadata, stored.metadata)
        return pb.GetDocumentResponse(document=message, passage_count=stored.passage_count)

    async def CountDocuments(
        self, request: pb.CountDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountDocumentsResponse:
        self._check_available()
        with _as_rpc_failures():
            name = _collection(request.collection, "collection")
            conditions = parse_filter(request.filter, self._settings) + _visibility()
            count = await self._backend.count_documents(name, conditions)
        return pb.CountDocumentsResponse(document_count=count)

    # -- search ------------------------------------------------------------------------

    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        with _as_rpc_failures():
            # The key's boundary is checked before the cache and is part of its key: a
            # result cached for one key is served only to keys that may see the same.
            check_collection(request.collection)
            principal = current()
            return await self._results.search(
                request.collection,
                request,
                lambda: self._search(request, context),
                boundary=principal.boundary() if principal is not None else "",
            )

    async def _search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        self._check_available()
        timeout_s = call_timeout(context, self._default_deadline_s)
        with _as_rpc_failures():
            name = _collection(request.collection, "collection")
            query = validation.check_search(request, self._settings)
            conditions = parse_filter(request.filter, self._settings) + _visibility()
            collection = await self._backend.get_collection(name)
            vector = query.vector
            if vector is not None:
                validation.check_vector_dimensions(
                    vector, collection.spec.dimensions, "query_vector"
                )
            elif query.mode is not Mode.KEYWORD:
                vector = (await self._embed([query.text], collection, timeout_s))[0]
            candidates = query.top_k * self._settings.candidate_multiplier
            if query.mode is Mode.HYBRID:
                # Min-max and DBSF normalise each ranking over the candidates it returns: a
                # floor keeps a small top_k's first hits those a large top_k ranks first.
                candidates = max(candidates, self._settings.hybrid_min_candidates)
            ranked: list[RankedHit]
            with (
                metrics.BACKEND_QUERY_SECONDS.labels(query.mode.value).time(),
                tracer.start_as_current_span(
                    "backend query",
                    attributes={
                        "search.mode": query.mode.value,
                        "search.backend": self._backend.name,
                        "search.candidates": candidates,
                    },
                ),
            ):
                if query.mode is Mode.KEYWORD:
                    ranked = ranked_keyword(
                        await self._backend.keyword_search(name, query.text, candidates, conditions)
                    )
                elif query.mode is Mode.DENSE:
                    assert vector is not None
                    ranked = ranked_dense(
                        await self._backend.dense_search(name, vector, candidates, conditions)
                    )
                else:
                    assert vector is not None
                    ranked = await self._backend.hybrid_search(
                        name, vector, query.text, candidates, conditions, query.fusion
                    )
        hits = one_per_document(ranked, query.top_k)
        return pb.SearchResponse(hits=[hit_to_proto(hit) for hit in hits], mode=MODES[query.mode])
