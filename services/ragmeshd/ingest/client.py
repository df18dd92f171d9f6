"""The sync's DocumentStore over gRPC: SearchService calls through Envoy.

Writes carry a deadline that grows with their passages (embedding them is the slow part, and
on a busy mesh they wait behind interactive calls in the embeddings server's bulk lane rather
than being refused). Retries of idempotent calls come from the channel
(ragmeshd.runtime.client_retries).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd import defaults
from ragmeshd.ingest.plan import RemoteDocument
from ragmeshd.ingest.sync import DocumentRefusedError, OutgoingDocument
from ragmeshd.runtime.tenancy import ACL_KEY

# A write's deadline: this much, plus this much per passage it holds.
WRITE_BASE_S = 30.0
WRITE_PER_PASSAGE_S = 0.25
# ListDocuments pages of this many.
LIST_PAGE_SIZE = defaults.MAX_LIST_PAGE_SIZE


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _clean(text: str) -> str:
    """Text for a metadata string: control characters (a PDF title may hold some) as spaces,
    cut to the server's limit."""
    return _CONTROL.sub(" ", text)[: defaults.MAX_SOURCE_CHARS]


def document_to_proto(document: OutgoingDocument) -> pb.Document:
    seconds, nanos = divmod(document.mtime_ns, 1_000_000_000)
    return pb.Document(
        id=document.id,
        source=_clean(document.source),
        title=_clean(document.title),
        content_hash=document.content_hash,
        modify_time=Timestamp(seconds=seconds, nanos=nanos),
        passages=[
            pb.PassageInput(
                text=passage.text, section=_clean(passage.section), page=passage.page or 0
            )
            for passage in document.passages
        ],
        metadata=({ACL_KEY: pb.MetadataValue(string_value=document.acl)} if document.acl else None),
    )


class MeshDocuments:
    """A collection's documents in the mesh, as a sync sees them."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self._stub = pb_grpc.SearchServiceStub(channel)
        self._timeout_s = timeout_s
        self.upsert_calls = 0

    async def ensure_collection(self, collection: str) -> bool:
        try:
            await self._stub.GetCollection(
                pb.GetCollectionRequest(name=collection), timeout=self._timeout_s
            )
            return False
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        try:
            await self._stub.CreateCollection(
                pb.CreateCollectionRequest(name=collection), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:  # made meanwhile by another run
                raise
            return False
        return True

    async def list_documents(self, collection: str, source_prefix: str) -> list[RemoteDocument]:
        found: list[RemoteDocument] = []
        token = ""
        while True:
            page = await self._stub.ListDocuments(
                pb.ListDocumentsRequest(
                    collection=collection,
                    source_prefix=source_prefix,
                    page_size=LIST_PAGE_SIZE,
                    page_token=token,
                ),
                timeout=self._timeout_s,
            )
            found.extend(RemoteDocument(d.id, d.content_hash) for d in page.documents)
            token = page.next_page_token
            if not token:
                return found

    async def list_summaries(
        self, collection: str, source_prefix: str, limit: int | None = None
    ) -> list[pb.DocumentSummary]:
        found: list[pb.DocumentSummary] = []
        token = ""
        while limit is None or len(found) < limit:
            page = await self._stub.ListDocuments(
                pb.ListDocumentsRequest(
                    collection=collection,
                    source_prefix=source_prefix,
                    page_size=LIST_PAGE_SIZE,
                    page_token=token,
                ),
                timeout=self._timeout_s,
            )
            found.extend(page.documents)
            token = page.next_page_token
            if not token:
                break
        return found if limit is None else found[:limit]

    async def upsert(self, collection: str, documents: Sequence[OutgoingDocument]) -> int:
        passages = sum(len(document.passages) for document in documents)
        try:
            response = await self._stub.UpsertDocuments(
                pb.UpsertDocumentsRequest(
                    collection=collection, documents=[document_to_proto(d) for d in documents]
                ),
                timeout=max(self._timeout_s, WRITE_BASE_S + WRITE_PER_PASSAGE_S * passages),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise DocumentRefusedError(error.details() or "invalid") from None
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                # Too many passages for the model within the write's deadline (Envoy caps a
                # write at 600 s, envoy/limits.py WRITE_DEADLINE_MAX_S): the sync sends the
                # batch's documents one by one and skips one that still does not fit.
                raise DocumentRefusedError(
                    f"not stored within the deadline ({passages} passages): {error.details()}"
                ) from None
            raise
        self.upsert_calls += 1
        return int(response.passage_count)

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        response = await self._stub.DeleteDocuments(
            pb.DeleteDocumentsRequest(collection=collection, ids=list(ids)),
            timeout=self._timeout_s,
        )
        return int(response.deleted_count)

    async def delete_by_source(self, collection: str, source_prefix: str) -> int:
        response = await self._stub.DeleteDocuments(
            pb.DeleteDocumentsRequest(collection=collection, source_prefix=source_prefix),
            timeout=self._timeout_s,
        )
        return int(response.deleted_count)
