"""The load tests' documents and queries: made up from a fixed word list and seed, so every run
searches the same collection without a data set to download."""

from __future__ import annotations

import random
import time

import grpc

from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc

COLLECTION = "load-test"
DOCUMENT_COUNT = 128
QUERY_COUNT = 64
_SEED = 13
_TOPICS = (
    "envoy retries idempotent calls on another replica; outlier detection ejects failing hosts;"
    " circuit breakers bound pending requests; postgres stores passages with pgvector; hnsw"
    " graphs answer nearest neighbour queries; bm25 ranks passages by term frequency;"
    " reciprocal rank fusion merges dense and keyword rankings; sentence transformers embed"
    " text into vectors; dynamic batching merges concurrent calls; mutual tls authenticates"
    " both peers; api keys are hashed at rest; prometheus scrapes metrics from every replica"
).split("; ")


def documents() -> list[search_pb.Document]:
    rng = random.Random(_SEED)
    result = []
    for index in range(DOCUMENT_COUNT):
        sentences = rng.sample(_TOPICS, 3)
        text = ". ".join(sentences).capitalize() + f". Note {index}."
        result.append(search_pb.Document(id=f"doc-{index}", text=text))
    return result


def queries() -> list[str]:
    rng = random.Random(_SEED + 1)
    return [" ".join(rng.sample(rng.choice(_TOPICS).split(), 3)) + "?" for _ in range(QUERY_COUNT)]


# The servers shed load they cannot serve in time (RESOURCE_EXHAUSTED) and may be briefly
# unavailable; filling retries those with backoff for up to this long.
FILL_RETRY_S = 180.0
_RETRIED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


def fill_collection(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], timeout_s: float = 120.0
) -> bool:
    """Create and fill the collection unless it exists; True when this call filled it.
    Upserts are idempotent (same ids), so a retried batch is safe."""
    stub = search_grpc.SearchServiceStub(channel)
    try:
        stub.CreateCollection(
            search_pb.CreateCollectionRequest(name=COLLECTION), metadata=metadata, timeout=60
        )
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
            return False
        raise
    batch = documents()
    deadline = time.monotonic() + FILL_RETRY_S
    for start in range(0, len(batch), 8):
        request = search_pb.UpsertDocumentsRequest(
            collection=COLLECTION, documents=batch[start : start + 8]
        )
        pause = 0.5
        while True:
            try:
                stub.UpsertDocuments(request, metadata=metadata, timeout=timeout_s)
                break
            except grpc.RpcError as error:
                if error.code() not in _RETRIED or time.monotonic() > deadline:  # type: ignore[attr-defined]
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
    return True
