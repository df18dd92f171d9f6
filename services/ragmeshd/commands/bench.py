"""`ragmesh bench ...`: performance measurements that print their numbers."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from ragmeshd.bench.ask import register_ask_bench
from ragmeshd.bench.ingest import register_ingest_bench
from ragmeshd.bench.overload import register_overload_bench
from ragmeshd.bench.report import BenchReport, machine
from ragmeshd.commands.bench_search import register_search_bench
from ragmeshd.commands.convention import (
    add_json_option,
    add_target_options,
    check_mesh_client,
    mesh_channel,
    print_json,
    settings_or_exit,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="measure throughput and latency",
        description="Every bench prints its numbers with the machine's CPUs and load average"
        " before and after; with --json, one JSON document on stdout (progress on stderr).",
    )
    # The bench modules sit below commands/ in the layers and cannot import the printer: each
    # handler calls args.emit_report(args, name, produce).
    bench.set_defaults(emit_report=emit_report)
    targets = bench.add_subparsers(dest="bench", required=True, metavar="WHAT")

    _register_embed(targets)
    register_search_bench(targets)
    register_ingest_bench(targets)
    register_overload_bench(targets)
    register_ask_bench(targets)
    _register_search_cache(targets)
    for parser in targets.choices.values():
        add_json_option(parser)


def _register_embed(targets: argparse._SubParsersAction) -> None:
    embed = targets.add_parser(
        "embed",
        help="the embeddings server: batched vs unbatched vs in-process",
        description="Send single-text Embed calls at a fixed concurrency to a server with"
        " batching on and one with batching off (both started here unless --target is"
        " given), and run SentenceTransformer.encode on the same texts in-process; print"
        " texts/s, p50/p99 latency, mean batch size and the ratios.",
    )
    embed.add_argument(
        "--concurrency", type=int, default=64, help="calls in flight at once (default 64)"
    )
    embed.add_argument(
        "--requests", type=int, default=2000, help="single-text Embed calls per run (default 2000)"
    )
    add_target_options(embed, "measure")
    embed.add_argument(
        "--port", type=int, default=50151, help="first port of the servers started here"
    )
    embed.add_argument(
        "--raw-batch-size",
        type=int,
        default=64,
        help="batch size of the in-process SentenceTransformer.encode run (default 64)",
    )
    embed.add_argument(
        "--mesh",
        action="store_true",
        help="measure through Envoy (mTLS + API key) on a mesh started here, beside the bare"
        " server, raw torch at batch 64 and 1, the server's runtime raw at batch 64, and the"
        " embeddings cache (32 distinct 1,000-character texts, twice)",
    )
    embed.add_argument(
        "--running",
        action="store_true",
        help="with --mesh: use the running mesh of the state folder (ragmesh --state-dir)"
        " instead of starting one",
    )
    embed.set_defaults(handler=_bench_embed)


def _register_search_cache(targets: argparse._SubParsersAction) -> None:
    cache = targets.add_parser(
        "search-cache",
        help="the search result cache on a Zipf-distributed SciFact query log, through Envoy",
        description="Start a mesh, ingest SciFact abstracts, replay the training claims drawn"
        " with Zipf-distributed repetition through Envoy (mTLS + API key) with the result"
        " cache off, then on (a second mesh over the same data), and print the hit rate and"
        " mean, p50 and p99 latency of both.",
    )
    cache.add_argument(
        "--beir",
        type=Path,
        default=Path("../shared/datasets/scifact"),
        help="a BEIR-format dataset folder (default ../shared/datasets/scifact)",
    )
    cache.add_argument(
        "--requests", type=int, default=2000, help="Search calls replayed per run (default 2000)"
    )
    cache.add_argument(
        "--concurrency", type=int, default=8, help="calls in flight at once (default 8)"
    )
    cache.add_argument(
        "--zipf-s",
        type=float,
        default=1.1,
        help="exponent of the Zipf distribution the queries are drawn by (default 1.1)",
    )
    cache.add_argument(
        "--documents", type=int, default=1000, help="abstracts ingested (all relevant ones first)"
    )
    cache.set_defaults(handler=_bench_search_cache)


def emit_report(args: argparse.Namespace, name: str, produce: Callable[[], BenchReport]) -> int:
    """Run a bench; print its text, or with --json one JSON document on stdout (whatever the
    bench prints while it runs goes to stderr then)."""
    before = machine()
    if args.json:
        with contextlib.redirect_stdout(sys.stderr):
            report = produce()
        report.machine_before = before
        print_json(report.document(name))
    else:
        report = produce()
        print(report.text, flush=True)
    return 0


def _bench_embed(args: argparse.Namespace) -> int:
    from ragmeshd.bench.embed_server import report, run_bench

    settings = settings_or_exit()
    if args.mesh:
        from ragmeshd.bench.embed_mesh import run_mesh_bench

        return args.emit_report(
            args,
            "embed --mesh",
            lambda: run_mesh_bench(
                concurrency=args.concurrency,
                requests=args.requests,
                mesh_state_dir=settings.state_dir.resolve() if args.running else None,
                port=args.port,
                models_dir=settings.models_dir,
            ),
        )
    target = None
    if args.target:
        check_mesh_client(settings, args)
        target = lambda: mesh_channel(settings, args)  # noqa: E731

    def measure() -> BenchReport:
        results = run_bench(
            concurrency=args.concurrency,
            requests=args.requests,
            target=target,
            port=args.port,
            raw_batch_size=args.raw_batch_size,
        )
        return report(results, args.concurrency, args.requests)

    return args.emit_report(args, "embed", measure)


def _bench_search_cache(args: argparse.Namespace) -> int:
    from ragmeshd.bench.search_cache import run_search_cache_bench

    settings = settings_or_exit()
    return args.emit_report(
        args,
        "search-cache",
        lambda: run_search_cache_bench(
            beir=args.beir,
            requests=args.requests,
            concurrency=args.concurrency,
            zipf_s=args.zipf_s,
            documents=args.documents,
            models_dir=settings.models_dir,
        ),
    )
