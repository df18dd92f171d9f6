"""`ragmesh eval --beir DIR`: nDCG@10 and Recall@100 of the search service per mode."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from ragmeshd.runtime.logs import configure_logging
from ragmeshd.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "eval",
        help="measure retrieval quality on a BEIR-format dataset",
        description="Ingest a BEIR corpus through the search service's gRPC API, search every"
        " query of the split in each mode (top_k 100) and print nDCG@10 and Recall@100, with"
        " the same model's exact in-process dense search over the same passages as the"
        " reference. Without --target it starts its own embedded PostgreSQL, embeddings and"
        " search servers (state in a temporary directory unless --state-dir is given).",
    )
    evaluate.add_argument("--beir", type=Path, required=True, help="the dataset directory")
    evaluate.add_argument("--split", default="train", help="qrels/<split>.tsv (default train)")
    evaluate.add_argument("--mode", choices=["dense", "keyword", "hybrid", "all"], default="all")
    evaluate.add_argument("--target", help="a running search server (host:port, plaintext)")
    evaluate.add_argument("--api-key", help="the API key to send to --target")
    evaluate.add_argument("--backend", choices=["pgvector", "qdrant"], default="pgvector")
    evaluate.add_argument(
        "--fusion",
        action="append",
        default=[],
        metavar="METHOD[:DENSE_W:KEYWORD_W[:RRF_K]]",
        help="also evaluate HYBRID with this fusion (rrf, min_max or distribution; weights and"
        " k as in SearchRequest); repeatable: --fusion rrf:1:1:60 --fusion min_max:0.7:0.3",
    )
    evaluate.add_argument("--collection", help="collection name (default beir-<dataset>)")
    evaluate.add_argument("--state-dir", type=Path, help="keep the started stack's state here")
    evaluate.add_argument(
        "--no-baseline", action="store_true", help="skip the in-process reference"
    )
    evaluate.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    from ragmeshd.bench.search_stack import search_stack
    from ragmeshd.evaluation.beir import (
        EvalReport,
        evaluate_service,
        format_report,
        in_process_rankings,
        load_beir,
        parse_fusion,
        score,
    )
    from ragmeshd.models import packaged_model_path
    from ragmeshd.search.server import make_splitter

    settings = load_settings()
    configure_logging("eval", "WARNING")
    try:
        fusions = [parse_fusion(spec) for spec in args.fusion]
    except ValueError as exc:
        print(f"ragmesh eval: --fusion {exc}", file=sys.stderr)
        return 2
    data = load_beir(args.beir, args.split)
    collection = args.collection or f"beir-{data.name.lower()}"[:63]
    modes = ["dense", "keyword", "hybrid"] if args.mode == "all" else [args.mode]
    report = EvalReport(data, args.split, 0, 0.0)
    print(
        f"evaluating {data.name}: {len(data.corpus)} documents, {len(data.queries)} queries",
        flush=True,
    )

    def run(target: str) -> None:
        asyncio.run(
            evaluate_service(target, data, collection, modes, report, args.api_key, fusions)
        )

    if args.target:
        run(args.target)
    else:
        with tempfile.TemporaryDirectory(prefix="ragmesh-eval-") as scratch:
            state_dir = args.state_dir or Path(scratch)
            state_dir.mkdir(parents=True, exist_ok=True)
            with search_stack(state_dir.resolve(), backend=args.backend) as stack:
                run(stack.search_target)
    if not args.no_baseline:
        started = time.perf_counter()
        model_dir = settings.embeddings.model_path
        rankings, _ = in_process_rankings(
            data, make_splitter(settings), Path(model_dir) if model_dir else packaged_model_path()
        )
        report.baseline = score(
            "in-process exact dense (same passages)",
            rankings,
            data,
            time.perf_counter() - started,
        )
    backend = "(given target)" if args.target else args.backend
    print(format_report(report, backend), flush=True)
    return 0
