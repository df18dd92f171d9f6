"""`python -m ragmeshd.evaluation.fusion_study --beir DIR`: HYBRID fusion variants compared
offline on a BEIR split, to choose the server's default fusion on training data only.

It builds what the service would rank, without the service: the same passages (the
service's splitter), exact cosine similarity with the model in-process (the service's HNSW
scan has recall@10 0.996 on SciFact), and exact BM25 with the service's tokenizer (the pgvector
backend's ranking is exactly this BM25). Each mode keeps CANDIDATES passages per query, as the
service does for `ragmesh eval`'s top_k of 100, and every variant is fused by
ragmeshd/search/fusion.py itself, then one hit per document, nDCG@10 against the qrels.
Through the service the same variants run with `ragmesh eval --fusion ...`.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ragmeshd.evaluation.beir import NDCG_K, TOP_K, load_beir
from ragmeshd.search.fusion import fuse_passages, one_per_document, ranked_dense, ranked_keyword
from ragmeshd.search.keywords import bm25_idf, passage_terms, query_terms
from ragmeshd.search.metrics import mean_over_queries
from ragmeshd.search.records import FusionMethod, FusionParams, PassageHit, RankedHit

CANDIDATES = 3 * TOP_K
K1, B = 1.2, 0.75
VARIANTS = [
    FusionParams(60, 1.0, 1.0, FusionMethod.RRF),
    FusionParams(20, 1.0, 1.0, FusionMethod.RRF),
    FusionParams(60, 1.0, 1.5, FusionMethod.RRF),
    FusionParams(60, 1.5, 1.0, FusionMethod.RRF),
    *(
        FusionParams(60, dense, round(1 - dense, 2), method)
        for method in (FusionMethod.MIN_MAX, FusionMethod.DISTRIBUTION)
        for dense in (0.3, 0.4, 0.5, 0.6, 0.7)
    ),
]


def bm25_rankings(
    passages: list[str], queries: list[str], limit: int
) -> list[list[tuple[int, float]]]:
    """Exact BM25 (keywords.py) of every passage for every query: top `limit` (index, score)."""
    counted = [passage_terms(text) for text in passages]
    postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for index, terms in enumerate(counted):
        for term, frequency in terms.frequencies.items():
            postings[term].append((index, frequency))
    average = max(sum(t.length for t in counted) / len(counted), 1.0)
    lengths = np.array([t.length for t in counted], dtype=np.float64)
    norms = K1 * (1 - B + B * lengths / average)
    rankings = []
    for query in queries:
        scores: dict[int, float] = defaultdict(float)
        for term in query_terms(query):
            found = postings.get(term)
            if not found:
                continue
            idf = bm25_idf(len(found), len(counted))
            for index, tf in found:
                scores[index] += idf * tf * (K1 + 1) / (tf + norms[index])
        ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        rankings.append(ordered[:limit])
    return rankings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--vectors", type=Path, help="cache the passage vectors here (.npy)")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from ragmeshd.models import packaged_model_path, resolve_device
    from ragmeshd.search.chunking import make_splitter
    from ragmeshd.settings import load_settings

    settings = load_settings()
    data = load_beir(args.beir, args.split)
    splitter = make_splitter(settings)
    owners: list[str] = []
    texts: list[str] = []
    for document_id, text in data.corpus.items():
        for piece in splitter.split(text):
            owners.append(document_id)
            texts.append(piece)
    model_dir = settings.embeddings.model_path
    model = SentenceTransformer(
        str(Path(model_dir) if model_dir else packaged_model_path()), device=resolve_device("auto")
    )
    if args.vectors and args.vectors.exists():
        vectors = np.load(args.vectors)
    else:
        vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
        if args.vectors:
            np.save(args.vectors, vectors)
    query_ids = list(data.queries)
    query_texts = [data.queries[q] for q in query_ids]
    query_vectors = model.encode(query_texts, batch_size=64, normalize_embeddings=True)

    def hit(index: int, score: float) -> PassageHit:
        return PassageHit(owners[index], index, texts[index], {}, float(score))

    similarities = query_vectors @ vectors.T
    dense: list[list[PassageHit]] = []
    for row in similarities:
        top = np.argsort(-row, kind="stable")[:CANDIDATES]
        dense.append([hit(int(i), float(row[i])) for i in top])
    keyword = [
        [hit(i, s) for i, s in ranking] for ranking in bm25_rankings(texts, query_texts, CANDIDATES)
    ]

    def documents(ranked: list[list[RankedHit]]) -> dict[str, list[str]]:
        return {
            q: [h.passage.document_id for h in one_per_document(r, TOP_K)]
            for q, r in zip(query_ids, ranked, strict=True)
        }

    def ndcg(rankings: dict[str, list[str]]) -> float:
        return mean_over_queries(rankings, data.qrels, "ndcg", NDCG_K)

    print(f"{data.name} {args.split}: {len(query_ids)} queries, {len(texts)} passages")
    print(f"{'dense (exact)':<34} {ndcg(documents([ranked_dense(d) for d in dense])):.4f}")
    print(f"{'keyword (BM25)':<34} {ndcg(documents([ranked_keyword(k) for k in keyword])):.4f}")
    for params in VARIANTS:
        fused = [fuse_passages(d, k, params) for d, k in zip(dense, keyword, strict=True)]
        label = (
            f"hybrid {params.method.value} {params.dense_weight:g}/{params.keyword_weight:g}"
            + (f" k={params.k}" if params.method is FusionMethod.RRF else "")
        )
        score = ndcg(documents(fused))
        print(f"{label:<34} {score:.4f}" + ("" if math.isfinite(score) else " (nan)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
