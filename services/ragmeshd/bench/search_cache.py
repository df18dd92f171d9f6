"""`ragmesh bench search-cache`: the search result cache on a query log with Zipf-distributed
repetition, through Envoy (mutual TLS + API key).

SciFact's training claims are ranked in a seeded random order and drawn with probability
proportional to 1 / rank^s (s = 1.1 by default), the shape of real query logs. The same log
is replayed twice, each on a mesh started here over one state folder (the corpus is
ingested once): first with the result cache off (TTL 0), then on. Printed: the hit rate (from
the search server's own counters) and the mean and p50/p99 latency of both runs.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd.bench.loadgen import closed_loop
from ragmeshd.bench.mesh import MeshHandle, bench_mesh, free_port
from ragmeshd.bench.report import BenchReport
from ragmeshd.evaluation.beir import BeirData, load_beir

COLLECTION = "scifact-cache-bench"


def zipf_log(queries: list[str], length: int, s: float, seed: int) -> list[str]:
    """`length` queries drawn with P(rank r) ∝ 1 / r^s over a seeded shuffle of `queries`."""
    rng = random.Random(seed)
    ranked = list(queries)
    rng.shuffle(ranked)
    weights = [1 / (rank**s) for rank in range(1, len(ranked) + 1)]
    return rng.choices(ranked, weights=weights, k=length)


@dataclass
class Replay:
    label: str
    mean_ms: float
    p50_ms: float
    p99_ms: float
    per_s: float
    hits: float
    misses: float

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def line(self) -> str:
        return (
            f"{self.label:<12} mean {self.mean_ms:7.1f} ms   p50 {self.p50_ms:7.1f} ms"
            f"   p99 {self.p99_ms:7.1f} ms   {self.per_s:7.1f} searches/s"
            f"   cache hit rate {self.hit_rate:6.1%}"
        )


def _counter(metrics: str, name: str) -> float:
    text = httpx.get(f"http://{metrics}/metrics", timeout=5).text
    found = re.search(rf'^{name}\{{cache="search_results"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def replay(
    mesh: MeshHandle, metrics: str, log: list[str], concurrency: int, label: str
) -> Replay:
    hits = _counter(metrics, "ragmesh_cache_hits_total")
    misses = _counter(metrics, "ragmesh_cache_misses_total")
    async with mesh.channel() as channel:
        client = pb_grpc.SearchServiceStub(channel)

        def search(query: str) -> Awaitable[pb.SearchResponse]:
            request = pb.SearchRequest(collection=COLLECTION, query=query, top_k=10)
            return client.Search(request, timeout=60)

        load = await closed_loop(log, search, concurrency)
    return Replay(
        label,
        sum(load.latencies_s) / len(load.latencies_s) * 1000,
        load.percentile_ms(0.50),
        load.percentile_ms(0.99),
        load.calls_per_s,
        _counter(metrics, "ragmesh_cache_hits_total") - hits,
        _counter(metrics, "ragmesh_cache_misses_total") - misses,
    )


def corpus_subset(data: BeirData, documents: int, seed: int) -> dict[str, str]:
    """Every document some claim is judged relevant to, then others up to `documents`."""
    wanted = {doc for relevant in data.qrels.values() for doc in relevant}
    others = [doc for doc in data.corpus if doc not in wanted]
    random.Random(seed).shuffle(others)
    chosen = wanted | set(others[: max(0, documents - len(wanted))])
    return {doc: data.corpus[doc] for doc in data.corpus if doc in chosen}


def run_search_cache_bench(
    *,
    beir: Path,
    requests: int,
    concurrency: int,
    zipf_s: float,
    documents: int,
    models_dir: Path,
    seed: int = 11,
) -> BenchReport:
    data = load_beir(beir, "train")
    log = zipf_log(list(data.queries.values()), requests, zipf_s, seed)
    corpus = corpus_subset(data, documents, seed)
    load = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    runs: list[Replay] = []
    passages = 0
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-cache-") as directory:
        for label, ttl in (("cache off", "0"), ("cache on", "60")):
            metrics = f"127.0.0.1:{free_port()}"
            env = {
                "RAGMESH_SEARCH__RESULT_CACHE_TTL_S": ttl,
                "RAGMESH_SEARCH__METRICS_LISTEN": metrics,
            }
            with bench_mesh(None, models_dir, env, state_dir=Path(directory)) as mesh:
                if not passages:
                    passages = asyncio.run(_ingest(mesh, corpus))
                time.sleep(1)
                runs.append(asyncio.run(replay(mesh, metrics, log, concurrency, label)))
    load.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    off, on = runs
    distinct = len(set(log))
    lines = [
        f"ragmesh bench search-cache: {requests} Search calls (hybrid, top 10) through Envoy,"
        f" {concurrency} callers, over {len(corpus)} SciFact abstracts ({passages} passages);"
        f" query log: {len(data.queries)} training claims drawn by Zipf s={zipf_s},"
        f" {distinct} distinct (best possible hit rate {1 - distinct / requests:.1%})",
        f"load before: {load[0]}",
        off.line(),
        on.line(),
        f"hit rate (cache on)       = {on.hit_rate:.1%}   (target > 40%)",
        f"mean latency on / off     = {on.mean_ms / off.mean_ms:.2f}x"
        f"   ({off.mean_ms:.1f} -> {on.mean_ms:.1f} ms)",
        f"load after: {load[1]}",
    ]
    numbers = {
        "requests": requests,
        "concurrency": concurrency,
        "documents": len(corpus),
        "passages": passages,
        "zipf_s": zipf_s,
        "distinct_queries": distinct,
        "cache_off": off,
        "cache_on": on,
        "hit_rate": on.hit_rate,
    }
    return BenchReport("\n".join(lines), numbers)


# Small upserts, retried: each must finish inside Envoy's route timeout even on a loaded
# machine (UpsertDocuments is idempotent).
INGEST_BATCH = 8
INGEST_ATTEMPTS = 5


async def _ingest(mesh: MeshHandle, corpus: dict[str, str]) -> int:
    async with mesh.channel() as channel:
        client = pb_grpc.SearchServiceStub(channel)
        await client.CreateCollection(pb.CreateCollectionRequest(name=COLLECTION), timeout=60)
        ids, passages = list(corpus), 0
        for start in range(0, len(ids), INGEST_BATCH):
            documents = [
                pb.Document(id=i, text=corpus[i]) for i in ids[start : start + INGEST_BATCH]
            ]
            request = pb.UpsertDocumentsRequest(collection=COLLECTION, documents=documents)
            for attempt in range(INGEST_ATTEMPTS):
                try:
                    passages += (await client.UpsertDocuments(request, timeout=120)).passage_count
                    break
                except grpc.aio.AioRpcError as exc:
                    retryable = exc.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                    )
                    if not retryable or attempt == INGEST_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(2**attempt)
        return passages
