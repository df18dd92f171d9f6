"""The clients' retry helper: idempotent methods only, the server's pushback honoured, within
the deadline. Driven through a real grpc.aio server on a loopback port."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd.runtime.client_retries import (
    IDEMPOTENT_METHODS,
    RetryIdempotent,
    RetryPolicy,
    pushback_s,
)
from tests.helpers import expect_error


class Flaky(pb_grpc.SearchServiceServicer):
    """Refuses the first `failures` calls of each method with `code` and `trailers`."""

    def __init__(self, failures: int, code: grpc.StatusCode, trailers: tuple = ()) -> None:
        self.failures = failures
        self.code = code
        self.trailers = trailers
        self.calls: dict[str, int] = {}
        self.times: list[float] = []

    async def _maybe_fail(self, name: str, context: grpc.aio.ServicerContext) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        self.times.append(asyncio.get_running_loop().time())
        if self.calls[name] <= self.failures:
            context.set_trailing_metadata(self.trailers)
            await context.abort(self.code, "busy")

    async def ListCollections(self, request, context):  # type: ignore[no-untyped-def]
        await self._maybe_fail("ListCollections", context)
        return pb.ListCollectionsResponse()

    async def CreateCollection(self, request, context):  # type: ignore[no-untyped-def]
        await self._maybe_fail("CreateCollection", context)
        return pb.CreateCollectionResponse()


@pytest.fixture
async def serve():  # type: ignore[no-untyped-def]
    servers = []

    async def start(servicer: Flaky, policy: RetryPolicy | None = None):  # type: ignore[no-untyped-def]
        server = grpc.aio.server()
        pb_grpc.add_SearchServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        retry = RetryIdempotent(policy or RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.02))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=[retry])
        return pb_grpc.SearchServiceStub(channel), retry

    yield start
    for server in servers:
        await server.stop(None)


async def test_an_idempotent_call_is_retried_until_it_succeeds(serve) -> None:  # type: ignore[no-untyped-def]
    servicer = Flaky(2, grpc.StatusCode.UNAVAILABLE)
    stub, retry = await serve(servicer)
    await stub.ListCollections(pb.ListCollectionsRequest(), timeout=10)
    assert servicer.calls["ListCollections"] == 3 and retry.retries == 2


async def test_a_call_that_is_not_idempotent_is_never_retried(serve) -> None:  # type: ignore[no-untyped-def]
    servicer = Flaky(1, grpc.StatusCode.UNAVAILABLE)
    stub, retry = await serve(servicer)
    await expect_error(
        stub.CreateCollection(pb.CreateCollectionRequest(name="x"), timeout=10),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert servicer.calls["CreateCollection"] == 1 and retry.retries == 0
    assert "/ragmesh.search.v1.SearchService/CreateCollection" not in IDEMPOTENT_METHODS


async def test_the_pushback_is_waited_and_a_negative_one_stops_retries(serve) -> None:  # type: ignore[no-untyped-def]
    servicer = Flaky(1, grpc.StatusCode.RESOURCE_EXHAUSTED, (("grpc-retry-pushback-ms", "300"),))
    stub, _ = await serve(servicer)
    await stub.ListCollections(pb.ListCollectionsRequest(), timeout=10)
    assert servicer.times[1] - servicer.times[0] >= 0.3
    refusing = Flaky(5, grpc.StatusCode.RESOURCE_EXHAUSTED, (("grpc-retry-pushback-ms", "-1"),))
    stub, _ = await serve(refusing)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ListCollections(pb.ListCollectionsRequest(), timeout=10)
    assert refusing.calls["ListCollections"] == 1


async def test_a_pushback_past_the_deadline_gives_up_at_once(serve) -> None:  # type: ignore[no-untyped-def]
    servicer = Flaky(5, grpc.StatusCode.UNAVAILABLE, (("grpc-retry-pushback-ms", "60000"),))
    stub, _ = await serve(servicer)
    await expect_error(
        stub.ListCollections(pb.ListCollectionsRequest(), timeout=2), grpc.StatusCode.UNAVAILABLE
    )
    assert servicer.calls["ListCollections"] == 1


async def test_other_codes_and_exhausted_attempts_are_not_retried(serve) -> None:  # type: ignore[no-untyped-def]
    invalid = Flaky(1, grpc.StatusCode.INVALID_ARGUMENT)
    stub, _ = await serve(invalid)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ListCollections(pb.ListCollectionsRequest(), timeout=10)
    assert invalid.calls["ListCollections"] == 1
    down = Flaky(100, grpc.StatusCode.UNAVAILABLE)
    stub, _ = await serve(down, RetryPolicy(max_attempts=3, initial_backoff_s=0.01))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ListCollections(pb.ListCollectionsRequest(), timeout=10)
    assert down.calls["ListCollections"] == 3


def test_pushback_parsing() -> None:
    assert pushback_s([("grpc-retry-pushback-ms", "250")]) == 0.25
    assert pushback_s([("grpc-retry-pushback-ms", b"0")]) == 0.0
    assert pushback_s([("grpc-retry-pushback-ms", "soon")]) == -1.0
    assert pushback_s([("other", "1")]) is None


def test_the_retried_methods_are_the_ones_the_protos_declare_safe() -> None:
    """Issue 18: `option idempotency_level` in the protos is the one declaration; Envoy's
    retried routes and the clients' retries derive from it (the same list as before)."""
    from ragmeshd.runtime.api import API_FILES
    from ragmeshd.runtime.client_retries import IDEMPOTENT_BY_SERVICE, IDEMPOTENT_METHODS

    assert IDEMPOTENT_BY_SERVICE == {
        "embeddings": ("Embed", "Info"),
        "search": (
            "ListCollections",
            "GetCollection",
            "UpsertDocuments",
            "DeleteDocuments",
            "GetDocument",
            "ListDocuments",
            "CountDocuments",
            "Search",
        ),
        "coordinator": ("AugmentQuery", "RecordFeedback", "GetInteraction"),
        "llm": ("Info",),
    }
    methods = {
        f"/{service.full_name}/{method.name}": method
        for file in API_FILES
        for service in file.services_by_name.values()
        for method in service.methods
    }
    for path in IDEMPOTENT_METHODS:
        assert not methods[path].client_streaming and not methods[path].server_streaming, path
