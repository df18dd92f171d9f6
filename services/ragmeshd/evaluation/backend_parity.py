"""`python -m ragmeshd.evaluation.backend_parity --beir DIR`: KEYWORD nDCG@10 of the pgvector and
the Qdrant backend on the same passages of a BEIR split, to check that both rank keywords
with one BM25 (ragmeshd/search/keywords.py).

The corpus is split by the service's splitter and stored through each backend's own upsert
in batches (an embedded PostgreSQL in a scratch directory; Qdrant in local mode); keywords need
no model, so every passage gets the same placeholder vector. Each query takes the top
3 * 100 passages, one hit per document, as the service does for `ragmesh eval`.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ragmeshd.evaluation.beir import NDCG_K, TOP_K, BeirData, load_beir
from ragmeshd.postgres.embedded import EmbeddedPostgres, accepts_connections
from ragmeshd.search.backends.base import SearchBackend
from ragmeshd.search.backends.pgvector import PgVectorBackend
from ragmeshd.search.backends.qdrant import QdrantBackend
from ragmeshd.search.fusion import one_per_document, ranked_keyword
from ragmeshd.search.metrics import mean_over_queries
from ragmeshd.search.records import CollectionSpec, Passage, PreparedDocument
from ragmeshd.settings import PostgresSettings, SearchSettings, load_settings

BATCH = 256


async def keyword_ndcg(
    backend: SearchBackend, data: BeirData, documents: list[PreparedDocument]
) -> tuple[float, float]:
    await backend.start()
    try:
        await backend.create_collection(CollectionSpec("parity", 2, "none", 16, 64))
        started = time.perf_counter()
        for start in range(0, len(documents), BATCH):
            await backend.upsert("parity", documents[start : start + BATCH])
        ingest_s = time.perf_counter() - started
        rankings = {}
        for query_id, text in data.queries.items():
            hits = await backend.keyword_search("parity", text, 3 * TOP_K, ())
            ranked = one_per_document(ranked_keyword(hits), TOP_K)
            rankings[query_id] = [hit.passage.document_id for hit in ranked]
        return mean_over_queries(rankings, data.qrels, "ndcg", NDCG_K), ingest_s
    finally:
        await backend.close()


async def wait_for(dsn: str) -> None:
    for _ in range(300):
        if await accepts_connections(dsn):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the embedded PostgreSQL did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, required=True)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()

    from ragmeshd.search.chunking import make_splitter

    settings = load_settings()
    data = load_beir(args.beir, args.split)
    splitter = make_splitter(settings)
    placeholder = np.array([1.0, 0.0], dtype=np.float32)
    documents = [
        PreparedDocument(
            document_id,
            text,
            {},
            [Passage(i, piece, placeholder) for i, piece in enumerate(splitter.split(text))],
        )
        for document_id, text in data.corpus.items()
    ]
    results = {}
    with tempfile.TemporaryDirectory(prefix="ragmesh-parity-") as scratch:
        server = EmbeddedPostgres(Path(scratch))
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path;"
                " from ragmeshd.postgres.embedded import EmbeddedPostgres;"
                " sys.exit(EmbeddedPostgres(Path(sys.argv[1])).run())",
                scratch,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(wait_for(server.dsn()))
            search = SearchSettings(pg=PostgresSettings(pool_min_size=1, pool_max_size=2))
            results["pgvector"] = asyncio.run(
                keyword_ndcg(PgVectorBackend(server.dsn(), search), data, documents)
            )
        finally:
            process.terminate()
            process.wait(timeout=60)
        qdrant = SearchSettings(qdrant_location=str(Path(scratch) / "qdrant"))
        results["qdrant"] = asyncio.run(keyword_ndcg(QdrantBackend(qdrant), data, documents))
    passages = sum(len(d.passages) for d in documents)
    print(f"{data.name} {args.split}: {len(data.queries)} queries, {passages} passages")
    for name, (ndcg, ingest_s) in results.items():
        print(f"KEYWORD nDCG@10 {name:<9} {ndcg:.4f}   (ingest {ingest_s:.1f} s)")
    gap = abs(results["pgvector"][0] - results["qdrant"][0])
    verdict = "ok" if gap <= 0.005 else "FAIL"
    print(f"|pgvector - qdrant| = {gap:.4f}  (must be <= 0.005: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
