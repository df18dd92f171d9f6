"""`ragmesh bench search`: the search service's vector index and query throughput.

With N seeded random unit vectors of 384 dimensions, each document with a passage of text
(services/search/bench_text.py: Zipf-distributed words by default), measured through the
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

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import numpy as np

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from services.loadgen import closed_loop
from services.progress import Progress
from services.runtime.channels import metadata_interceptors
from services.search.bench_text import TEXT_MODES, TextSource

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


@dataclass
class ModeResult:
    mode: str
    qps: float
    p50_ms: float
    p99_ms: float


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
    concurrency: int,
) -> ModeResult:
    for request in requests[:concurrency]:  # warm-up
        await stub.Search(request, timeout=60)
    load = await closed_loop(
        requests, lambda request: stub.Search(request, timeout=60), concurrency
    )
    return ModeResult(mode, load.calls_per_s, load.percentile_ms(0.50), load.percentile_ms(0.99))


async def run_against(
    target: str,
    dsn: str,
    result: BenchResult,
    data: Dataset,
    *,
    recall_queries: int,
    concurrency: int,
    requests: int,
    seed: int,
    api_key: str | None = None,
) -> None:
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(
        target, options=options, interceptors=metadata_interceptors(api_key)
    ) as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        vectors, texts, queries = data.vectors, data.texts, data.query_vectors
        print(f"ingesting {len(texts)} vectors ...", flush=True)
        result.ingest_s = await ingest(stub, vectors, texts)
        if dsn:
            print("rebuilding the HNSW index ...", flush=True)
            result.index_build_s = await rebuild_index(dsn)
        print("measuring recall ...", flush=True)
        result.recall_at_10 = await measure_recall(stub, vectors, queries[:recall_queries])
        result.recall_queries = recall_queries
        by_mode = {
            "dense": [
                pb.SearchRequest(
                    collection=COLLECTION,
                    query_vector=queries[i].tolist(),
                    mode=pb.SEARCH_MODE_DENSE,
                    top_k=RECALL_K,
                )
                for i in range(requests)
            ],
            "keyword": [
                pb.SearchRequest(
                    collection=COLLECTION,
                    query=data.query_texts[i],
                    mode=pb.SEARCH_MODE_KEYWORD,
                    top_k=RECALL_K,
                )
                for i in range(requests)
            ],
            "hybrid": [
                pb.SearchRequest(
                    collection=COLLECTION,
                    query=data.query_texts[i],
                    query_vector=queries[i].tolist(),
                    mode=pb.SEARCH_MODE_HYBRID,
                    top_k=RECALL_K,
                )
                for i in range(requests)
            ],
        }
        result.concurrency, result.requests = concurrency, requests
        for mode, mode_requests in by_mode.items():
            print(f"measuring {mode} ...", flush=True)
            result.modes.append(await measure_mode(stub, mode, mode_requests, concurrency))


def run_search_bench(
    *,
    vectors: int,
    recall_queries: int,
    concurrency: int,
    requests: int,
    seed: int,
    distribution: str,
    text: str,
    target: str | None,
    pg_dsn: str,
    state_dir: Path | None,
    api_key: str | None = None,
) -> BenchResult:
    from services.commands.search_stack import search_stack
    from services.config import load_settings

    data = dataset(vectors, max(recall_queries, requests), seed, distribution, text)
    result = BenchResult(vectors, distribution=distribution, text=data.text_description)

    def measure(search_target: str, dsn: str) -> None:
        asyncio.run(
            run_against(
                search_target,
                dsn,
                result,
                data,
                recall_queries=recall_queries,
                concurrency=concurrency,
                requests=requests,
                seed=seed,
                api_key=api_key,
            )
        )

    if target:
        measure(target, pg_dsn)
        return result
    # The stack started here reads the same settings (environment, config file) as this process.
    result.ef_search = str(load_settings().search.hnsw_ef_search)
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-") as scratch:
        state = (state_dir or Path(scratch)).resolve()
        state.mkdir(parents=True, exist_ok=True)
        with search_stack(state, start_embeddings=False) as stack:
            measure(stack.search_target, stack.pg_dsn)
    return result


def report(result: BenchResult) -> str:
    ef_search = result.ef_search or "as the target server has it"
    lines = [
        f"ragmesh bench search: {result.vectors} random {DIMENSIONS}-d vectors,"
        f" {result.distribution} (pgvector, HNSW"
        f" m=16 ef_construction=64, hnsw.ef_search={ef_search}); {result.text}",
        f"ingest through UpsertDocuments   {result.ingest_s:8.1f} s"
        f"   ({result.vectors / result.ingest_s:.0f} documents/s, index built incrementally)",
    ]
    if result.index_build_s is not None:
        lines.append(f"HNSW index build (REINDEX)       {result.index_build_s:8.1f} s")
    lines.append(
        f"recall@10 vs exact               {result.recall_at_10:8.4f}"
        f"   ({result.recall_queries} queries; target >= 0.95)"
    )
    lines.append(f"queries at concurrency {result.concurrency}, {result.requests} per mode:")
    for mode in result.modes:
        lines.append(
            f"  {mode.mode:<8} {mode.qps:8.1f} queries/s   p50 {mode.p50_ms:7.1f} ms"
            f"   p99 {mode.p99_ms:7.1f} ms"
        )
    return "\n".join(lines)


def register_search_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Adds `ragmesh bench search` to the `bench` command's subcommands."""
    search = bench_subparsers.add_parser(
        "search",
        help="the search service: HNSW recall, index build time, queries/s per mode",
        description="Ingest seeded random 384-d vectors through the search service (started"
        " here with an embedded PostgreSQL unless --target is given), then measure HNSW"
        " recall@10 against exact search, the index build time, and queries/s with p50/p99"
        " latency for DENSE, KEYWORD and HYBRID at a fixed concurrency.",
    )
    search.add_argument("--vectors", type=int, default=100_000, help="how many (default 100000)")
    search.add_argument("--recall-queries", type=int, default=200)
    search.add_argument("--concurrency", type=int, default=16)
    search.add_argument("--requests", type=int, default=1000, help="queries per mode")
    search.add_argument("--seed", type=int, default=42)
    search.add_argument(
        "--distribution",
        choices=DISTRIBUTIONS,
        default="clustered",
        help="clustered: a seeded Gaussian mixture of 1000 centres, like text embeddings"
        " (default); uniform: directions uniform on the sphere, the worst case for HNSW",
    )
    search.add_argument(
        "--text",
        choices=TEXT_MODES,
        default="zipf",
        help="zipf: passages of 50-150 and queries of 3-10 words from a Zipf distribution over"
        " 30,000 words, like real text (default); synthetic: 12 words of 5,000 per passage,"
        " queries of a passage's first 3 words (the older bench)",
    )
    search.add_argument("--target", help="a running search server (pgvector, plaintext)")
    search.add_argument("--api-key", help="the API key to send to --target")
    search.add_argument("--pg-dsn", default="", help="its database, to time the index build")
    search.add_argument("--state-dir", type=Path, help="keep the started stack's state here")
    search.set_defaults(handler=_bench_search)


def _bench_search(args: argparse.Namespace) -> int:
    result = run_search_bench(
        vectors=args.vectors,
        recall_queries=args.recall_queries,
        concurrency=args.concurrency,
        requests=args.requests,
        seed=args.seed,
        distribution=args.distribution,
        text=args.text,
        target=args.target,
        pg_dsn=args.pg_dsn,
        state_dir=args.state_dir,
        api_key=args.api_key,
    )
    print(report(result), flush=True)
    return 0
