"""`ragmesh bench search`: the search service's vector index and query throughput.

With N seeded random unit vectors of 384 dimensions, each document with a passage of text
(ragmeshd/bench/text.py: Zipf-distributed words by default), measured through the
gRPC API on the pgvector backend:
  - ingest time (UpsertDocuments with precomputed vectors; the HNSW index grows as rows
    arrive), and index build time (REINDEX of the HNSW index over all N rows at once);
  - HNSW recall@10 against exact search (numpy, cosine) for seeded random queries from the
    same distribution, at the server's hnsw.ef_search;
  - queries/s and p50/p99 latency at a fixed concurrency for DENSE, KEYWORD and HYBRID.

The vectors are "clustered" by default: a seeded Gaussian mixture, the topical structure
text embeddings have. "uniform" (directions uniform on the sphere) is the worst case for any
graph index: in 384 dimensions the nearest neighbours of a random query are barely nearer
than any other point, so recall at a practical ef_search is far lower there.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import numpy as np

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd.bench.loadgen import closed_loop
from ragmeshd.bench.search_mesh import KeywordWarmup, ProcessCpu, warm_keyword_index
from ragmeshd.bench.text import TextSource
from ragmeshd.progress import Progress

DIMENSIONS = 384
UPSERT_BATCH = 256
# Writes to one collection take its row lock in turn (term statistics are kept in the same
# transaction), so more than one upsert in flight only waits on the lock, and under load a
# wait counts against the statement timeout.
UPSERT_CONCURRENCY = 1
RECALL_K = 10
COLLECTION = "bench-search"
CLUSTERS = 1000
CLUSTER_SPREAD = 1.0
DISTRIBUTIONS = ("clustered", "uniform")
WARMUP_QUERIES = 64


@dataclass
class ModeResult:
    mode: str
    qps: float
    p50_ms: float
    p99_ms: float
    concurrency: int = 0
    # CPU cores used on average during the mode's run, by process (mesh mode).
    cores: dict[str, float] = field(default_factory=dict)


@dataclass
class BenchResult:
    vectors: int
    distribution: str = "clustered"
    text: str = ""
    ingest_s: float = 0.0
    index_build_s: float | None = None
    recall_at_10: float = 0.0
    recall_queries: int = 0
    ef_search: str = ""
    concurrency: int = 0
    requests: int = 0
    modes: list[ModeResult] = field(default_factory=list)
    path: str = "the search server (plaintext, no key)"
    reused: bool = False
    keyword_warmup: KeywordWarmup | None = None
    load_before: str = ""
    load_after: str = ""


def random_vectors(
    count: int, rng: np.random.Generator, distribution: str, centers: np.ndarray | None = None
) -> np.ndarray:
    """Seeded unit vectors. "uniform": directions uniform on the sphere. "clustered": a
    Gaussian mixture around CLUSTERS random centres (cosine to the centre about 0.7), the
    topical structure real text embeddings have."""
    if distribution == "uniform":
        vectors = rng.normal(size=(count, DIMENSIONS)).astype(np.float32)
    else:
        assert centers is not None
        noise = rng.normal(size=(count, DIMENSIONS)).astype(np.float32) / np.sqrt(DIMENSIONS)
        vectors = centers[rng.integers(0, len(centers), size=count)] + CLUSTER_SPREAD * noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cluster_centers(rng: np.random.Generator) -> np.ndarray:
    centers = rng.normal(size=(CLUSTERS, DIMENSIONS)).astype(np.float32)
    return centers / np.linalg.norm(centers, axis=1, keepdims=True)


@dataclass
class Dataset:
    vectors: np.ndarray
    texts: list[str]
    query_vectors: np.ndarray
    query_texts: list[str]
    text_description: str


def dataset(count: int, queries: int, seed: int, distribution: str, text: str) -> Dataset:
    """Documents (vectors and texts) and queries (vectors and texts) from the same
    distributions."""
    rng = np.random.default_rng(seed)
    centers = cluster_centers(rng) if distribution == "clustered" else None
    vectors = random_vectors(count, rng, distribution, centers)
    query_vectors = random_vectors(queries, rng, distribution, centers)
    source = TextSource(text, np.random.default_rng(seed + 2))
    texts = source.passages(count)
    return Dataset(vectors, texts, query_vectors, source.queries(queries, texts), source.describe())


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


async def stored_documents(stub: pb_grpc.SearchServiceStub) -> int:
    try:
        info = await stub.GetCollection(pb.GetCollectionRequest(name=COLLECTION))
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.NOT_FOUND:
            raise
        return -1
    return int(info.collection.document_count)


async def ingest(stub: pb_grpc.SearchServiceStub, vectors: np.ndarray, texts: list[str]) -> float:
    try:
        await stub.DeleteCollection(pb.DeleteCollectionRequest(name=COLLECTION))
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.NOT_FOUND:
            raise
    await stub.CreateCollection(pb.CreateCollectionRequest(name=COLLECTION, dimensions=DIMENSIONS))
    semaphore = asyncio.Semaphore(UPSERT_CONCURRENCY)

    async def upsert(start: int) -> None:
        documents = [
            pb.Document(
                id=str(i),
                text=texts[i],
                metadata={"bucket": pb.MetadataValue(number_value=i % 100)},
                vector=vectors[i].tolist(),
            )
            for i in range(start, min(start + UPSERT_BATCH, len(texts)))
        ]
        async with semaphore:
            await stub.UpsertDocuments(
                pb.UpsertDocumentsRequest(collection=COLLECTION, documents=documents), timeout=600
            )
        progress.advance(len(documents))

    started = time.perf_counter()
    with Progress("ingesting", total=len(texts), unit="docs") as progress:
        await asyncio.gather(*(upsert(start) for start in range(0, len(texts), UPSERT_BATCH)))
    return time.perf_counter() - started


async def rebuild_index(dsn: str) -> float:
    """REINDEX the collection's HNSW index: the time to build it over every row at once."""
    conn = await asyncpg.connect(dsn)
    try:
        collection_id = await conn.fetchval(
            "SELECT id FROM search_collections WHERE name = $1", COLLECTION
        )
        started = time.perf_counter()
        await conn.execute(f"REINDEX INDEX search_passages_{collection_id}_embedding")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def measure_recall(
    stub: pb_grpc.SearchServiceStub, vectors: np.ndarray, queries: np.ndarray
) -> float:
    exact = exact_top_k(vectors, queries, RECALL_K)
    found = 0
    for row, query in enumerate(queries):
        response = await stub.Search(
            pb.SearchRequest(
                collection=COLLECTION,
                query_vector=query.tolist(),
                mode=pb.SEARCH_MODE_DENSE,
                top_k=RECALL_K,
            )
        )
        hits = {int(hit.document_id) for hit in response.hits}
        found += len(hits & set(exact[row].tolist()))
    return found / (len(queries) * RECALL_K)


async def measure_mode(
    stub: pb_grpc.SearchServiceStub,
    mode: str,
    requests: list[pb.SearchRequest],
    warmups: list[pb.SearchRequest],
    concurrency: int,
    cpu: ProcessCpu | None = None,
) -> ModeResult:
    await asyncio.gather(*(stub.Search(request, timeout=60) for request in warmups))
    if cpu is not None:
        cpu.start()
    load = await closed_loop(
        requests, lambda request: stub.Search(request, timeout=60), concurrency
    )
    cores = cpu.cores(load.elapsed_s) if cpu is not None else {}
    return ModeResult(
        mode,
        load.calls_per_s,
        load.percentile_ms(0.50),
        load.percentile_ms(0.99),
        concurrency,
        cores,
    )


async def run_against(
    channel_factory: Callable[[], grpc.aio.Channel],
    dsn: str,
    result: BenchResult,
    data: Dataset,
    *,
    recall_queries: int,
    concurrency: int,
    requests: int,
    seed: int,
    reuse: bool = False,
    dense_concurrencies: tuple[int, ...] = (),
    cpu: ProcessCpu | None = None,
    search_log: Path | None = None,
) -> None:
    async with channel_factory() as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        vectors, texts, queries = data.vectors, data.texts, data.query_vectors
        if reuse and await stored_documents(stub) == len(texts):
            print(f"reusing the stored {len(texts)} documents", flush=True)
            result.reused = True
        else:
            print(f"ingesting {len(texts)} vectors ...", flush=True)
            result.ingest_s = await ingest(stub, vectors, texts)
            if dsn:
                print("rebuilding the HNSW index ...", flush=True)
                result.index_build_s = await rebuild_index(dsn)
        # Disjoint query ranges (the result cache would answer a repeated one): measured
        # ones (DENSE once more per lower concurrency), then warm-ups, then recall's.
        measured = requests * (1 + len(dense_concurrencies))
        warmups = range(measured, measured + WARMUP_QUERIES)
        print("measuring recall ...", flush=True)
        result.recall_at_10 = await measure_recall(
            stub, vectors, queries[measured + WARMUP_QUERIES :][:recall_queries]
        )
        result.recall_queries = recall_queries
        by_mode = {
            "dense": [
                pb.SearchRequest(
                    collection=COLLECTION,
                    query_vector=queries[i].tolist(),
                    mode=pb.SEARCH_MODE_DENSE,
                    top_k=RECALL_K,
                )
                for i in [*range(measured), *warmups]
            ],
            "keyword": [
                pb.SearchRequest(
                    collection=COLLECTION,
                    query=data.query_texts[i],
                    mode=pb.SEARCH_MODE_KEYWORD,
                    top_k=RECALL_K,
                )
                for i in [*range(measured), *warmups]
            ],
            "hybrid": [
                pb.SearchRequest(
                    collection=COLLECTION,
                    query=data.query_texts[i],
                    query_vector=queries[i].tolist(),
                    mode=pb.SEARCH_MODE_HYBRID,
                    top_k=RECALL_K,
                )
                for i in [*range(measured), *warmups]
            ],
        }
        result.concurrency, result.requests = concurrency, requests
        print("waiting for the keyword index ...", flush=True)
        result.keyword_warmup = await warm_keyword_index(
            stub, by_mode["keyword"][measured + concurrency :], search_log
        )
        result.load_before = load_average()
        for mode, mode_requests in by_mode.items():
            print(f"measuring {mode} ...", flush=True)
            result.modes.append(
                await measure_mode(
                    stub,
                    mode,
                    mode_requests[:requests],
                    mode_requests[measured : measured + concurrency],
                    concurrency,
                    cpu,
                )
            )
        for round_, lower in enumerate(dense_concurrencies, start=1):
            print(f"measuring dense at concurrency {lower} ...", flush=True)
            dense = by_mode["dense"]
            result.modes.append(
                await measure_mode(
                    stub,
                    "dense",
                    dense[round_ * requests : (round_ + 1) * requests],
                    dense[measured : measured + lower],
                    lower,
                    cpu,
                )
            )
        result.load_after = load_average()


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_search_bench(
    *,
    vectors: int,
    recall_queries: int,
    concurrency: int,
    requests: int,
    seed: int,
    distribution: str,
    text: str,
    target: Callable[[], grpc.aio.Channel] | None,
    pg_dsn: str,
    state_dir: Path | None,
    mesh: bool = False,
    reuse: bool = False,
    dense_concurrencies: tuple[int, ...] = (),
    ef_search: int | None = None,
) -> BenchResult:
    from ragmeshd.bench.mesh import bench_mesh
    from ragmeshd.bench.search_stack import search_stack
    from ragmeshd.postgres.embedded import EmbeddedPostgres
    from ragmeshd.settings import load_settings
    from ragmeshd.state import MeshLayout

    # Warm-up queries come after the measured ones: none of them is answered from a cache.
    queries = recall_queries + requests * (1 + len(dense_concurrencies)) + WARMUP_QUERIES
    data = dataset(vectors, queries, seed, distribution, text)
    result = BenchResult(vectors, distribution=distribution, text=data.text_description)

    def measure(
        factory: Callable[[], grpc.aio.Channel],
        dsn: str,
        cpu: ProcessCpu | None = None,
        search_log: Path | None = None,
    ) -> None:
        asyncio.run(
            run_against(
                factory,
                dsn,
                result,
                data,
                recall_queries=recall_queries,
                concurrency=concurrency,
                requests=requests,
                seed=seed,
                reuse=reuse,
                dense_concurrencies=dense_concurrencies,
                cpu=cpu,
                search_log=search_log,
            )
        )

    def plaintext(address: str) -> Callable[[], grpc.aio.Channel]:
        return lambda: grpc.aio.insecure_channel(
            address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )

    if target is not None:
        result.path = "Envoy at --target (mTLS + API key)"
        measure(target, pg_dsn)
        return result
    # The stack started here reads the same settings (environment, config file) as this process.
    settings = load_settings()
    result.ef_search = str(settings.search.hnsw_ef_search)
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-") as scratch:
        state = (state_dir or Path(scratch)).resolve()
        state.mkdir(parents=True, exist_ok=True)
        if mesh:
            result.path = "Envoy (mTLS + API key), ragmesh up with one replica each"
            env = {"RAGMESH_SEARCH__HNSW_EF_SEARCH": str(ef_search)} if ef_search else {}
            if ef_search:
                result.ef_search = str(ef_search)
            with bench_mesh(None, settings.models_dir, env, state_dir=state) as handle:
                cpu = ProcessCpu(dict(handle.state.pids))
                log = MeshLayout(state).logs_dir / "search-0.log"
                measure(handle.channel, EmbeddedPostgres(state).dsn(), cpu, log)
        else:
            with search_stack(state, start_embeddings=False) as stack:
                measure(plaintext(stack.search_target), stack.pg_dsn)
    return result
