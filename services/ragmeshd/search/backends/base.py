"""The interface every document store implements, and the errors it raises.

The servicer validates requests, splits and embeds text and fuses rankings; a backend only
stores, counts and ranks. A backend raises the errors below (never RpcFailure), which the
servicer maps to gRPC codes.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence

import numpy as np

from ragmeshd.search.fusion import fuse_passages
from ragmeshd.search.records import (
    CollectionInfo,
    CollectionSpec,
    DocumentPage,
    Filter,
    FusionParams,
    PassageHit,
    PreparedDocument,
    RankedHit,
    StoredDocument,
)


class BackendError(Exception):
    """Base of the errors a backend raises on purpose."""


class StoreUnavailableError(BackendError):
    """The store cannot be reached (or timed out); retrying later may succeed."""


class StoreTimeoutError(BackendError):
    """The store did not finish the operation in time (e.g. the statement timeout)."""


class InvalidPageTokenError(BackendError):
    """A page token this backend did not make."""

    def __init__(self) -> None:
        super().__init__(
            "page_token is not one a previous ListDocuments returned: pass next_page_token"
            " as it came, or empty for the first page"
        )


class CollectionNotFoundError(BackendError):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} does not exist")
        self.name = name


class CollectionExistsError(BackendError):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} already exists")
        self.name = name


class SearchBackend(abc.ABC):
    """A document store: collections of documents split into passages with vectors."""

    # A short name for logs and errors ("pgvector", "qdrant").
    name: str = ""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (and prepare the schema); raise with a clear message if that fails."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailableError when it does not."""

    @abc.abstractmethod
    async def create_collection(self, spec: CollectionSpec) -> CollectionInfo: ...

    @abc.abstractmethod
    async def list_collections(self) -> list[CollectionInfo]: ...

    @abc.abstractmethod
    async def get_collection(self, name: str) -> CollectionInfo: ...

    @abc.abstractmethod
    async def delete_collection(self, name: str) -> None: ...

    @abc.abstractmethod
    async def upsert(self, name: str, documents: Sequence[PreparedDocument]) -> None:
        """Store all of `documents` (replacing same ids) or, on any error, none of them."""

    @abc.abstractmethod
    async def delete_documents(self, name: str, ids: Sequence[str]) -> int:
        """Remove the documents; returns how many were stored."""

    @abc.abstractmethod
    async def get_document(self, name: str, document_id: str) -> StoredDocument | None: ...

    @abc.abstractmethod
    async def count_documents(self, name: str, conditions: Filter) -> int: ...

    @abc.abstractmethod
    async def list_documents(
        self, name: str, source_prefix: str, page_token: str, limit: int
    ) -> DocumentPage:
        """Up to `limit` documents whose metadata "source" starts with `source_prefix` (all
        when empty), after those of the page that returned `page_token` ("" for the first)."""

    @abc.abstractmethod
    async def dense_search(
        self, name: str, vector: np.ndarray, limit: int, conditions: Filter
    ) -> list[PassageHit]:
        """Up to `limit` passages by cosine similarity to `vector`, best first."""

    @abc.abstractmethod
    async def keyword_search(
        self, name: str, text: str, limit: int, conditions: Filter
    ) -> list[PassageHit]:
        """Up to `limit` passages by keyword relevance to `text`, best first."""

    async def hybrid_search(
        self,
        name: str,
        vector: np.ndarray,
        text: str,
        limit: int,
        conditions: Filter,
        fusion: FusionParams,
    ) -> list[RankedHit]:
        """Both rankings fused with weighted RRF. A backend with its own fusion may override
        this; the result must be the same."""
        dense, keyword = await asyncio.gather(
            self.dense_search(name, vector, limit, conditions),
            self.keyword_search(name, text, limit, conditions),
        )
        return fuse_passages(dense, keyword, fusion)[:limit]
