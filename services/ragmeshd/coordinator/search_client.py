"""The coordinator's client of SearchService: deadlines and a circuit breaker that fails fast
while search is down. Each call is made once; in the mesh Envoy is the one retry layer
(ragmeshd/envoy/limits.py). A call cancelled by its own caller counts for nothing.

The target is a setting (the search server, or Envoy in front of it) and the channel takes
optional credentials (mTLS through Envoy). Answers that mean "your request is wrong" (bad
argument, unknown collection) are not failures of the service: they reach the caller as
SearchRejectedError / CollectionNotFoundError and leave the breaker alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import grpc

from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from ragmeshd.runtime.channels import open_channel
from ragmeshd.runtime.errors import RpcFailure
from ragmeshd.runtime.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    Verdict,
    failure_unless_cancelled,
    is_cancellation,
)
from ragmeshd.runtime.tenancy import delegation_metadata

T = TypeVar("T")

# Codes with which the search service says the request, not the service, is at fault.
_CLIENT_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        # The caller's key may not use the collection (issue 24): an answer about the caller,
        # so one tenant asking for another's collection cannot open the breaker for everyone.
        grpc.StatusCode.PERMISSION_DENIED,
    }
)

MetadataValue = str | float | bool


class SearchError(Exception):
    """Base of the errors this client raises."""


class SearchUnavailableError(SearchError):
    """The search service could not answer (down, overloaded, too slow, breaker open)."""


class SearchRejectedError(SearchError):
    """The search service refused the request as invalid; the message is its reason."""


class CollectionNotFoundError(SearchError):
    def __init__(self, collection: str) -> None:
        super().__init__(f"collection {collection!r} does not exist in the search service")
        self.collection = collection


class SearchForbiddenError(RpcFailure):
    """The caller's key (forwarded by the coordinator) may not use the collection: reaches
    the caller as PERMISSION_DENIED with the search service's reason, which names it. An
    RpcFailure, so the error interceptor sends it as it is."""

    def __init__(self, details: str) -> None:
        super().__init__(grpc.StatusCode.PERMISSION_DENIED, details)


def _metadata_value(value: MetadataValue) -> search_pb.MetadataValue:
    if isinstance(value, bool):
        return search_pb.MetadataValue(bool_value=value)
    if isinstance(value, int | float):
        return search_pb.MetadataValue(number_value=float(value))
    return search_pb.MetadataValue(string_value=value)


def _verdict(exc: BaseException) -> Verdict:
    """What a failed call says about the search service: a refusal of the request is an
    answer, a cancellation nothing, anything else a failure."""
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _CLIENT_ERROR_CODES:
        return Verdict.SUCCESS
    return failure_unless_cancelled(exc)


def _translate(
    exc: grpc.aio.AioRpcError, what: str, collection: str
) -> SearchError | SearchForbiddenError:
    if is_cancellation(exc):
        # Our own caller leaving arrives as asyncio.CancelledError, not as this: a CANCELLED
        # status came from the path (Envoy or a connection torn down mid-call). Not a breaker
        # failure, but the caller must hear UNAVAILABLE.
        return SearchUnavailableError(
            f"the call to the search service was cancelled on the way ({what}): {exc.details()}"
        )
    code = exc.code()
    if code is grpc.StatusCode.NOT_FOUND and collection:
        return CollectionNotFoundError(collection)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return SearchForbiddenError(exc.details() or code.name)
    if code in _CLIENT_ERROR_CODES:
        return SearchRejectedError(exc.details() or code.name)
    return SearchUnavailableError(f"the search service failed {what}: {code.name}: {exc.details()}")


class SearchClient:
    """Calls SearchService; one channel shared by all calls."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float,
        breaker: CircuitBreaker,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        channel_options: list[tuple[str, object]] | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self.target = target
        self._timeout_s = timeout_s
        self.breaker = breaker
        options = list(channel_options or [])
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self._channel = open_channel(target, credentials, options, interceptors)
        self._stub = search_grpc.SearchServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(
        self,
        what: str,
        operation: Callable[[float], Awaitable[T]],
        *,
        collection: str = "",
        timeout_s: float | None = None,
    ) -> T:
        """Run `operation(timeout_s)` once, within the breaker and the overall `timeout_s`
        (default: the client's timeout)."""
        total_s = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        if total_s <= 0:
            raise SearchUnavailableError(f"no time left to call the search service ({what})")
        try:
            return await self.breaker.call(lambda: operation(total_s), _verdict)
        except CircuitOpenError:
            raise SearchUnavailableError(
                "the search service is failing; not calling it for now (circuit breaker open)"
            ) from None
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, what, collection) from None

    async def list_collections(self, *, timeout_s: float | None = None) -> list[str]:
        async def run(deadline_s: float) -> list[str]:
            # For the caller: only the collections its key may use (runtime/tenancy.py).
            response = await self._stub.ListCollections(
                search_pb.ListCollectionsRequest(),
                timeout=deadline_s,
                metadata=delegation_metadata(),
            )
            return [collection.name for collection in response.collections]

        return await self._call("ListCollections", run, timeout_s=timeout_s)

    async def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int,
        mode: search_pb.SearchMode,
        timeout_s: float | None = None,
    ) -> list[search_pb.SearchHit]:
        request = search_pb.SearchRequest(
            collection=collection, query=query, top_k=top_k, mode=mode
        )

        async def run(deadline_s: float) -> list[search_pb.SearchHit]:
            # With the caller's authority: its key's collections and groups bound the search.
            response = await self._stub.Search(
                request, timeout=deadline_s, metadata=delegation_metadata()
            )
            return list(response.hits)

        return await self._call("Search", run, collection=collection, timeout_s=timeout_s)

    async def ensure_collection(self, name: str, *, timeout_s: float | None = None) -> bool:
        """Create the collection (vectors of the embeddings service's model) unless it
        exists; returns whether it was created."""

        async def run(deadline_s: float) -> bool:
            try:
                await self._stub.CreateCollection(
                    search_pb.CreateCollectionRequest(name=name), timeout=deadline_s
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.ALREADY_EXISTS:
                    return False
                raise
            return True

        return await self._call("CreateCollection", run, timeout_s=timeout_s)

    async def upsert_document(
        self,
        collection: str,
        document_id: str,
        text: str,
        metadata: Mapping[str, MetadataValue],
        *,
        timeout_s: float | None = None,
    ) -> None:
        document = search_pb.Document(
            id=document_id,
            text=text,
            metadata={key: _metadata_value(value) for key, value in metadata.items()},
        )
        request = search_pb.UpsertDocumentsRequest(collection=collection, documents=[document])

        async def run(deadline_s: float) -> None:
            await self._stub.UpsertDocuments(request, timeout=deadline_s)

        await self._call("UpsertDocuments", run, collection=collection, timeout_s=timeout_s)

    async def delete_documents(
        self, collection: str, ids: list[str], *, timeout_s: float | None = None
    ) -> int:
        """Delete documents by id; 0 when the collection does not exist."""
        request = search_pb.DeleteDocumentsRequest(collection=collection, ids=ids)

        async def run(deadline_s: float) -> int:
            response = await self._stub.DeleteDocuments(request, timeout=deadline_s)
            return int(response.deleted_count)

        try:
            return await self._call(
                "DeleteDocuments", run, collection=collection, timeout_s=timeout_s
            )
        except CollectionNotFoundError:
            return 0
