"""`ragmesh bench search`: its command line and its report (the bench itself is
ragmeshd/bench/search.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ragmeshd.bench.report import BenchReport
from ragmeshd.bench.search import (
    DIMENSIONS,
    DISTRIBUTIONS,
    BenchResult,
    run_search_bench,
)
from ragmeshd.bench.text import TEXT_MODES
from ragmeshd.commands.convention import (
    add_target_options,
    check_mesh_client,
    mesh_channel,
    read_secret_file,
    settings_or_exit,
)


def report(result: BenchResult) -> str:
    ef_search = result.ef_search or "as the target server has it"
    lines = [
        f"ragmesh bench search: {result.vectors} random {DIMENSIONS}-d vectors,"
        f" {result.distribution} (pgvector, HNSW"
        f" m=16 ef_construction=64, hnsw.ef_search={ef_search}); {result.text}",
        f"calls through {result.path}; {os.cpu_count()} CPUs",
    ]
    if result.reused:
        lines.append("ingest: skipped (--reuse found the collection stored)")
    else:
        lines.append(
            f"ingest through UpsertDocuments   {result.ingest_s:8.1f} s"
            f"   ({result.vectors / result.ingest_s:.0f} documents/s, index built incrementally)"
        )
    if result.index_build_s is not None:
        lines.append(f"HNSW index build (REINDEX)       {result.index_build_s:8.1f} s")
    lines.append(
        f"recall@10 vs exact               {result.recall_at_10:8.4f}"
        f"   ({result.recall_queries} queries; target >= 0.95)"
    )
    if result.keyword_warmup is not None:
        lines.append(result.keyword_warmup.line())
    lines.append(
        f"{result.requests} queries per mode (load average before {result.load_before},"
        f" after {result.load_after}):"
    )
    for mode in result.modes:
        lines.append(
            f"  {mode.mode:<8} c={mode.concurrency:<3} {mode.qps:8.1f} queries/s"
            f"   p50 {mode.p50_ms:7.1f} ms   p99 {mode.p99_ms:7.1f} ms"
        )
        if mode.cores:
            lines.append(
                "           CPU cores: "
                + ", ".join(f"{name} {cores:.2f}" for name, cores in mode.cores.items())
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
    search.add_argument(
        "--recall-queries",
        type=int,
        default=200,
        help="queries whose top 10 is compared with exact search (default 200)",
    )
    search.add_argument(
        "--concurrency", type=int, default=16, help="queries in flight at once (default 16)"
    )
    search.add_argument(
        "--requests", type=int, default=1000, help="queries per mode (default 1000)"
    )
    search.add_argument(
        "--seed", type=int, default=42, help="seed of the vectors and texts (default 42)"
    )
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
    add_target_options(search, "measure")
    _add_mesh_options(search)
    search.set_defaults(handler=_bench_search)


def _add_mesh_options(search: argparse.ArgumentParser) -> None:
    search.add_argument(
        "--pg-dsn-file",
        type=Path,
        metavar="FILE",
        help="with --target: a file holding its database's DSN, to time the index build",
    )
    search.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="keep the state of the stack started here in DIR (default: a temporary folder)",
    )
    search.add_argument(
        "--mesh",
        action="store_true",
        help="start a mesh (ragmesh up) and call through Envoy with mTLS and the API key, as"
        " clients do, reporting each process's CPU per mode",
    )
    search.add_argument(
        "--reuse",
        action="store_true",
        help="skip ingestion when --work-dir already holds the collection with --vectors"
        " documents (a later run over the same data)",
    )
    search.add_argument(
        "--ef-search",
        type=int,
        help="with --mesh: the search server's hnsw.ef_search (default: its setting)",
    )
    search.add_argument(
        "--dense-concurrency",
        type=int,
        action="append",
        default=[],
        help="also measure DENSE at this (lower) concurrency; repeatable",
    )


def _bench_search(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    target = None
    if args.target:
        check_mesh_client(settings, args)
        target = lambda: mesh_channel(settings, args)  # noqa: E731
    pg_dsn = read_secret_file(args.pg_dsn_file, "a PostgreSQL DSN") if args.pg_dsn_file else ""

    def measure() -> BenchReport:
        result = run_search_bench(
            vectors=args.vectors,
            recall_queries=args.recall_queries,
            concurrency=args.concurrency,
            requests=args.requests,
            seed=args.seed,
            distribution=args.distribution,
            text=args.text,
            target=target,
            pg_dsn=pg_dsn,
            state_dir=args.work_dir,
            mesh=args.mesh,
            reuse=args.reuse,
            dense_concurrencies=tuple(args.dense_concurrency),
            ef_search=args.ef_search,
        )
        return BenchReport(report(result), {"result": result})

    return int(args.emit_report(args, "search", measure))
