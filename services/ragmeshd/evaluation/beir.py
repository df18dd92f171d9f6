"""`ragmesh eval`: retrieval quality of a running search service on a BEIR-format dataset.

The corpus goes in through the gRPC API (UpsertDocuments, text only: the service splits and
embeds it), every query of the split is searched in each mode with top_k = 100, and nDCG@10
and Recall@100 are computed against the qrels (binary relevance). The reference is the same
model in-process (sentence-transformers) with exact cosine search over the same passages
(split by the same splitter, a document scored by its best passage): DENSE through the
service should match it, so any gap is what the index and the service lose.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd.progress import Progress
from ragmeshd.runtime.client_retries import RetryIdempotent
from ragmeshd.search.chunking import PassageSplitter
from ragmeshd.search.metrics import mean_over_queries

TOP_K = 100
NDCG_K = 10
RECALL_K = 100
UPSERT_BATCH = 64
UPSERT_CONCURRENCY = 4
SEARCH_CONCURRENCY = 8
UPSERT_TIMEOUT_S = 600.0
SEARCH_TIMEOUT_S = 60.0
MODES: dict[str, pb.SearchMode] = {
    "dense": pb.SEARCH_MODE_DENSE,
    "keyword": pb.SEARCH_MODE_KEYWORD,
    "hybrid": pb.SEARCH_MODE_HYBRID,
}


@dataclass
class BeirData:
    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, set[str]]


@dataclass
class ModeScore:
    label: str
    ndcg: float
    recall: float
    seconds: float


_FUSION_METHODS = {
    "rrf": pb.FUSION_METHOD_RRF,
    "min_max": pb.FUSION_METHOD_MIN_MAX,
    "distribution": pb.FUSION_METHOD_DISTRIBUTION,
    "dbsf": pb.FUSION_METHOD_DBSF,
}


@dataclass(frozen=True)
class FusionVariant:
    """A HYBRID fusion "METHOD[:DENSE_WEIGHT:KEYWORD_WEIGHT[:RRF_K]]" ("": the default) at
    `top_k` hits: min-max and DBSF normalise over the candidates a call sees."""

    spec: str
    top_k: int = TOP_K

    @property
    def label(self) -> str:
        depth = f"top_k {self.top_k}" if self.top_k != TOP_K else ""
        return " ".join(word for word in ("hybrid", self.spec, depth) if word)

    def apply(self, request: pb.SearchRequest) -> None:
        request.top_k = self.top_k
        if not self.spec:
            return
        method, *numbers = self.spec.split(":")
        request.fusion_method = _FUSION_METHODS[method]
        if numbers:
            request.dense_weight, request.keyword_weight = float(numbers[0]), float(numbers[1])
        if len(numbers) > 2:
            request.rrf_k = int(numbers[2])


def parse_fusion(spec: str) -> FusionVariant:
    """A FusionVariant from its spec; ValueError with the expected form otherwise."""
    method, *numbers = spec.split(":")
    if method not in _FUSION_METHODS or len(numbers) not in (0, 2, 3):
        raise ValueError(
            f"{spec!r}: expected METHOD[:DENSE_WEIGHT:KEYWORD_WEIGHT[:RRF_K]] with METHOD one"
            f" of {', '.join(_FUSION_METHODS)}"
        )
    try:
        weights = [float(n) for n in numbers[:2]]
        rrf_k = [int(n) for n in numbers[2:]]
    except ValueError:
        raise ValueError(f"{spec!r}: the weights must be numbers and RRF_K an integer") from None
    if any(w < 0 for w in weights) or any(k < 1 for k in rrf_k):
        raise ValueError(f"{spec!r}: weights must be >= 0 and RRF_K >= 1")
    return FusionVariant(spec)


@dataclass
class EvalReport:
    data: BeirData
    split: str
    passages: int
    ingest_s: float
    scores: list[ModeScore] = field(default_factory=list)
    baseline: ModeScore | None = None
    # HYBRID's rankings per row label ("hybrid", "hybrid <fusion spec>"), for --folds.
    hybrid_rankings: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def load_beir(directory: Path, split: str) -> BeirData:
    """corpus.jsonl (title + text), queries.jsonl, qrels/<split>.tsv (score > 0 relevant);
    only the queries with a judgement in the split are kept."""
    corpus = {}
    with (directory / "corpus.jsonl").open() as lines:
        for line in lines:
            record = json.loads(line)
            title, text = record.get("title", "").strip(), record.get("text", "").strip()
            corpus[str(record["_id"])] = f"{title} {text}".strip()
    qrels: dict[str, set[str]] = defaultdict(set)
    qrels_path = directory / "qrels" / f"{split}.tsv"
    with qrels_path.open() as lines:
        for number, line in enumerate(lines):
            parts = line.rstrip("\n").split("\t")
            if number == 0 and parts[0] == "query-id":
                continue
            if len(parts) >= 3 and float(parts[2]) > 0 and parts[1] in corpus:
                qrels[parts[0]].add(parts[1])
    queries = {}
    with (directory / "queries.jsonl").open() as lines:
        for line in lines:
            record = json.loads(line)
            if str(record["_id"]) in qrels:
                queries[str(record["_id"])] = record["text"]
    return BeirData(directory.name, corpus, queries, {q: qrels[q] for q in queries})


async def _bounded(jobs: Sequence[Callable[[], object]], concurrency: int) -> list[object]:
    semaphore = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], object]) -> object:
        async with semaphore:
            return await job()  # type: ignore[misc]

    return await asyncio.gather(*(run(job) for job in jobs))


async def ingest(stub: pb_grpc.SearchServiceStub, collection: str, corpus: dict[str, str]) -> int:
    """Recreate `collection` and upsert the corpus; returns the number of passages."""
    try:
        await stub.DeleteCollection(pb.DeleteCollectionRequest(name=collection))
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.NOT_FOUND:
            raise
    await stub.CreateCollection(pb.CreateCollectionRequest(name=collection))
    ids = list(corpus)
    batches = [ids[start : start + UPSERT_BATCH] for start in range(0, len(ids), UPSERT_BATCH)]

    progress = Progress(f"ingesting into {collection}", total=len(ids), unit="docs")

    def upsert(batch: list[str]) -> Callable[[], object]:
        async def call() -> int:
            response = await stub.UpsertDocuments(
                pb.UpsertDocumentsRequest(
                    collection=collection,
                    documents=[pb.Document(id=i, text=corpus[i]) for i in batch],
                ),
                timeout=UPSERT_TIMEOUT_S,
            )
            progress.advance(len(batch))
            return int(response.passage_count)

        return call

    with progress:
        counts = await _bounded([upsert(batch) for batch in batches], UPSERT_CONCURRENCY)
    return sum(int(count) for count in counts)  # type: ignore[call-overload]


async def search_all(
    stub: pb_grpc.SearchServiceStub,
    collection: str,
    queries: dict[str, str],
    mode: pb.SearchMode,
    fusion: FusionVariant | None = None,
) -> dict[str, list[str]]:
    def search(query_id: str) -> Callable[[], object]:
        async def call() -> tuple[str, list[str]]:
            request = pb.SearchRequest(
                collection=collection, query=queries[query_id], top_k=TOP_K, mode=mode
            )
            if fusion is not None:
                fusion.apply(request)
            response = await stub.Search(request, timeout=SEARCH_TIMEOUT_S)
            progress.advance()
            return query_id, [hit.document_id for hit in response.hits]

        return call

    mode_name = pb.SearchMode.Name(mode).removeprefix("SEARCH_MODE_").lower()
    with Progress(f"searching ({mode_name})", total=len(queries), unit="queries") as progress:
        results = await _bounded([search(q) for q in queries], SEARCH_CONCURRENCY)
    return dict(results)  # type: ignore[arg-type]


def in_process_rankings(
    data: BeirData, splitter: PassageSplitter, model_path: Path
) -> tuple[dict[str, list[str]], int]:
    """Exact cosine search with the model in-process over the same passages; a document
    scores as its best passage. Returns the rankings and the number of passages."""
    from sentence_transformers import SentenceTransformer

    from ragmeshd.models import resolve_device

    model = SentenceTransformer(str(model_path), device=resolve_device("auto"))
    passage_docs: list[int] = []
    passages: list[str] = []
    doc_ids = list(data.corpus)
    for number, document_id in enumerate(doc_ids):
        for piece in splitter.split(data.corpus[document_id]):
            passages.append(piece)
            passage_docs.append(number)
    passage_vectors = model.encode(
        passages, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
    )
    query_ids = list(data.queries)
    query_vectors = model.encode(
        [data.queries[q] for q in query_ids], batch_size=64, normalize_embeddings=True
    )
    similarities = query_vectors @ passage_vectors.T
    owners = np.asarray(passage_docs)
    rankings = {}
    for row, query_id in enumerate(query_ids):
        best = np.full(len(doc_ids), -np.inf, dtype=np.float32)
        np.maximum.at(best, owners, similarities[row])
        top = np.argsort(-best, kind="stable")[:TOP_K]
        rankings[query_id] = [doc_ids[index] for index in top]
    return rankings, len(passages)


def score(label: str, rankings: dict[str, list[str]], data: BeirData, seconds: float) -> ModeScore:
    return ModeScore(
        label,
        mean_over_queries(rankings, data.qrels, "ndcg", NDCG_K),
        mean_over_queries(rankings, data.qrels, "recall", RECALL_K),
        seconds,
    )


def plaintext_channel(target: str) -> grpc.aio.Channel:
    """A channel to a search server started here (loopback, no TLS, no key)."""
    return grpc.aio.insecure_channel(
        target,
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        # Idempotent calls (the upserts and searches) retried on UNAVAILABLE and
        # RESOURCE_EXHAUSTED after the server's pushback (ragmeshd/runtime/client_retries.py).
        interceptors=[RetryIdempotent()],
    )


def report_document(report: EvalReport) -> dict[str, object]:
    """The report's numbers as one JSON-ready document (`ragmesh eval --json`)."""
    data = report.data
    return {
        "dataset": data.name,
        "split": report.split,
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "passages": report.passages,
        "ingest_s": report.ingest_s,
        "scores": [dataclasses.asdict(score) for score in report.scores],
        "baseline": dataclasses.asdict(report.baseline) if report.baseline else None,
    }


async def evaluate_service(
    channel_factory: Callable[[], grpc.aio.Channel],
    data: BeirData,
    collection: str,
    modes: Sequence[str],
    report: EvalReport,
    fusions: Sequence[FusionVariant] = (),
) -> None:
    """Ingest, then score each mode, then HYBRID once per fusion variant, through a channel
    from `channel_factory` (a server started here, or a mesh through Envoy with mTLS)."""
    async with channel_factory() as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        started = time.perf_counter()
        report.passages = await ingest(stub, collection, data.corpus)
        report.ingest_s = time.perf_counter() - started
        for mode in modes:
            started = time.perf_counter()
            rankings = await search_all(stub, collection, data.queries, MODES[mode])
            result = score(mode, rankings, data, time.perf_counter() - started)
            report.scores.append(result)
            if mode == "hybrid":
                report.hybrid_rankings[mode] = rankings
            print(f"{mode}: nDCG@10 {result.ndcg:.4f}, Recall@100 {result.recall:.4f}", flush=True)
        for fusion in fusions:
            started = time.perf_counter()
            rankings = await search_all(
                stub, collection, data.queries, pb.SEARCH_MODE_HYBRID, fusion
            )
            result = score(fusion.label, rankings, data, time.perf_counter() - started)
            report.scores.append(result)
            if fusion.top_k == TOP_K:  # --folds compares fusions at the same depth
                report.hybrid_rankings[result.label] = rankings
            print(f"{result.label}: nDCG@10 {result.ndcg:.4f}", flush=True)


def format_report(report: EvalReport, backend: str) -> str:
    data = report.data
    lines = [
        f"ragmesh eval: {data.name} ({report.split}: {len(data.queries)} queries,"
        f" {len(data.corpus)} documents -> {report.passages} passages), backend {backend},"
        f" ingest {report.ingest_s:.1f} s",
        f"{'mode':<40} {'nDCG@10':>8} {'Recall@100':>11} {'seconds':>8}",
    ]
    rows = list(report.scores)
    if report.baseline is not None:
        rows.append(report.baseline)
    for row in rows:
        lines.append(f"{row.label:<40} {row.ndcg:8.4f} {row.recall:11.4f} {row.seconds:8.1f}")
    by_label = {row.label: row for row in report.scores}
    if report.baseline is not None and "dense" in by_label:
        gap = by_label["dense"].ndcg - report.baseline.ndcg
        verdict = "ok" if abs(gap) <= 0.01 else "FAIL"
        lines.append(f"dense - in-process nDCG@10 = {gap:+.4f}  (must be within 0.01: {verdict})")
    if {"dense", "keyword", "hybrid"} <= set(by_label):
        margin = by_label["hybrid"].ndcg - max(by_label["dense"].ndcg, by_label["keyword"].ndcg)
        verdict = "ok" if margin > 0 else "FAIL"
        lines.append(
            f"hybrid - max(dense, keyword) nDCG@10 = {margin:+.4f}  (must be > 0: {verdict})"
        )
    return "\n".join(lines)
