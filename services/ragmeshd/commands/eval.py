"""`ragmesh eval --beir DIR`: nDCG@10 and Recall@100 of the search service per mode."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragmeshd.commands.convention import (
    EXIT_USAGE,
    CommandError,
    add_json_option,
    add_target_options,
    check_mesh_client,
    mesh_channel,
    print_json,
    settings_or_exit,
)
from ragmeshd.runtime.logs import configure_logging

if TYPE_CHECKING:
    import grpc

    from ragmeshd.evaluation.beir import EvalReport
    from ragmeshd.evaluation.cross_validation import CrossValidation
    from ragmeshd.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "eval",
        help="measure retrieval quality on a BEIR-format dataset",
        description="Ingest a BEIR corpus through the search service's gRPC API, search every"
        " query of the split in each mode (top_k 100) and print nDCG@10 and Recall@100, with"
        " the same model's exact in-process dense search over the same passages as the"
        " reference. Without --target it starts its own embedded PostgreSQL, embeddings and"
        " search servers (state in a temporary directory unless --work-dir is given).",
    )
    evaluate.add_argument(
        "--beir",
        type=Path,
        required=True,
        help="a BEIR-format dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv"
        " (docs/operations.md says where to get them)",
    )
    evaluate.add_argument("--split", default="train", help="qrels/<split>.tsv (default train)")
    evaluate.add_argument(
        "--mode",
        choices=["dense", "keyword", "hybrid", "all"],
        default="all",
        help="which search modes to score (default all)",
    )
    add_target_options(evaluate, "evaluate")
    evaluate.add_argument(
        "--backend",
        choices=["pgvector", "qdrant"],
        default="pgvector",
        help="the document store of the servers started here (default pgvector)",
    )
    _add_hybrid_options(evaluate)
    evaluate.add_argument("--collection", help="collection name (default beir-<dataset>)")
    evaluate.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="keep the state of the servers started here in DIR (default: a temporary folder)",
    )
    evaluate.add_argument(
        "--no-baseline", action="store_true", help="skip the in-process reference"
    )
    add_json_option(evaluate)
    evaluate.set_defaults(handler=_eval)


def _add_hybrid_options(evaluate: argparse.ArgumentParser) -> None:
    """The HYBRID variants evaluated beside the modes, and the cross-validation over them."""
    evaluate.add_argument(
        "--fusion",
        action="append",
        default=[],
        metavar="METHOD[:DENSE_W:KEYWORD_W[:RRF_K]]",
        help="also evaluate HYBRID with this fusion (rrf, min_max, distribution, dbsf; weights"
        " and k as in SearchRequest); repeatable: --fusion rrf:1:1:60 --fusion dbsf:0.7:0.3",
    )
    evaluate.add_argument(
        "--hybrid-top-k",
        action="append",
        type=int,
        default=[],
        metavar="N",
        help="also evaluate HYBRID with the default fusion asking for only N hits (1-100;"
        " the other rows ask for 100), to compare nDCG@10 at a small top_k; repeatable",
    )
    evaluate.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="N",
        help="cross-validate HYBRID's fusion: each fold's choice made on the other N-1 folds"
        " (a grid, the default and --fusion), its held-out nDCG@10, the mean and a paired"
        " bootstrap 95%% interval of the gain over the default (evaluation/cross_validation.py)",
    )


def _eval(args: argparse.Namespace) -> int:
    from ragmeshd.evaluation.beir import (
        TOP_K,
        FusionVariant,
        format_report,
        parse_fusion,
        report_document,
    )

    settings = settings_or_exit()
    configure_logging("eval", "WARNING")
    try:
        fusions = [parse_fusion(spec) for spec in args.fusion]
    except ValueError as exc:
        raise CommandError(f"--fusion {exc}", EXIT_USAGE) from None
    if any(not 1 <= k <= TOP_K for k in args.hybrid_top_k):
        raise CommandError(f"--hybrid-top-k must be between 1 and {TOP_K}", EXIT_USAGE)
    fusions += [FusionVariant("", top_k) for top_k in args.hybrid_top_k]
    if args.folds:
        from ragmeshd.evaluation.cross_validation import GRID

        if args.folds < 2:
            raise CommandError("--folds must be at least 2", EXIT_USAGE)
        if args.mode not in ("all", "hybrid"):
            raise CommandError("--folds cross-validates HYBRID: --mode all or hybrid", EXIT_USAGE)
        fusions += [parse_fusion(spec) for spec in GRID if spec not in args.fusion]
    if args.target:
        check_mesh_client(settings, args)
    if not (args.beir / "corpus.jsonl").exists():
        raise CommandError(f"{args.beir} holds no corpus.jsonl: not a BEIR dataset", EXIT_USAGE)
    if args.json:
        with contextlib.redirect_stdout(sys.stderr):
            report = _evaluate(args, settings, fusions)
            validation = _cross_validate(report, args.folds)
        document = report_document(report)
        if validation is not None:
            document["cross_validation"] = dataclasses.asdict(validation)
        print_json(document)
    else:
        report = _evaluate(args, settings, fusions)
        validation = _cross_validate(report, args.folds)
        print(format_report(report, "(given target)" if args.target else args.backend))
        if validation is not None:
            from ragmeshd.evaluation.cross_validation import format_cross_validation

            print("\n".join(format_cross_validation(validation)))
    return 0


def _cross_validate(report: EvalReport, folds: int) -> CrossValidation | None:
    from ragmeshd.evaluation.beir import NDCG_K
    from ragmeshd.evaluation.cross_validation import cross_validate, per_query_ndcg

    if not folds:
        return None
    qrels = report.data.qrels
    scores = {
        label: per_query_ndcg(rankings, qrels, NDCG_K)
        for label, rankings in report.hybrid_rankings.items()
    }
    try:
        return cross_validate(scores, folds)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


def _evaluate(args: argparse.Namespace, settings: Settings, fusions: list[Any]) -> EvalReport:
    from ragmeshd.bench.search_stack import search_stack
    from ragmeshd.evaluation.beir import (
        EvalReport,
        evaluate_service,
        in_process_rankings,
        load_beir,
        plaintext_channel,
        score,
    )
    from ragmeshd.models import packaged_model_path
    from ragmeshd.search.chunking import make_splitter

    data = load_beir(args.beir, args.split)
    collection = args.collection or f"beir-{data.name.lower()}"[:63]
    modes = ["dense", "keyword", "hybrid"] if args.mode == "all" else [args.mode]
    report = EvalReport(data, args.split, 0, 0.0)
    print(
        f"evaluating {data.name}: {len(data.corpus)} documents, {len(data.queries)} queries",
        flush=True,
    )

    def run(factory: Callable[[], grpc.aio.Channel]) -> None:
        asyncio.run(evaluate_service(factory, data, collection, modes, report, fusions))

    if args.target:
        run(lambda: mesh_channel(settings, args, retry_idempotent=True))
    else:
        with tempfile.TemporaryDirectory(prefix="ragmesh-eval-") as scratch:
            work_dir = args.work_dir or Path(scratch)
            work_dir.mkdir(parents=True, exist_ok=True)
            with search_stack(work_dir.resolve(), backend=args.backend) as stack:
                run(lambda: plaintext_channel(stack.search_target))
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
    return report
