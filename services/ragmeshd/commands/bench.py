"""`ragmesh bench ...`: performance measurements that print their numbers."""

from __future__ import annotations

import argparse
from pathlib import Path

from ragmeshd.bench.ask import register_ask_bench
from ragmeshd.bench.ingest import register_ingest_bench
from ragmeshd.bench.overload import register_overload_bench
from ragmeshd.commands.bench_search import register_search_bench


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="measure throughput and latency")
    targets = bench.add_subparsers(dest="bench", required=True, metavar="WHAT")

    embed = targets.add_parser(
        "embed",
        help="the embeddings server: batched vs unbatched vs in-process",
        description="Send single-text Embed calls at a fixed concurrency to a server with"
        " batching on and one with batching off (both started here unless --target is"
        " given), and run SentenceTransformer.encode on the same texts in-process; print"
        " texts/s, p50/p99 latency, mean batch size and the ratios.",
    )
    embed.add_argument("--concurrency", type=int, default=64)
    embed.add_argument("--requests", type=int, default=2000)
    embed.add_argument("--target", help="measure this running server instead of starting one")
    embed.add_argument(
        "--api-key", help="the API key for --target (servers started here need none)"
    )
    embed.add_argument("--port", type=int, default=50151, help="first port for started servers")
    embed.add_argument("--raw-batch-size", type=int, default=64)
    embed.add_argument(
        "--mesh",
        action="store_true",
        help="measure through Envoy (mTLS + API key) on a mesh started here, beside the bare"
        " server, raw torch at batch 64 and 1, the server's runtime raw at batch 64, and the"
        " embeddings cache (32 distinct 1,000-character texts, twice)",
    )
    embed.add_argument(
        "--mesh-state-dir",
        type=Path,
        help="with --mesh: use the running mesh of this state folder instead of starting one",
    )
    embed.set_defaults(handler=_bench_embed)

    register_search_bench(targets)
    register_ingest_bench(targets)
    register_overload_bench(targets)
    register_ask_bench(targets)

    cache = targets.add_parser(
        "search-cache",
        help="the search result cache on a Zipf-distributed SciFact query log, through Envoy",
        description="Start a mesh, ingest SciFact abstracts, replay the training claims drawn"
        " with Zipf-distributed repetition through Envoy (mTLS + API key) with the result"
        " cache off, then on (a second mesh over the same data), and print the hit rate and"
        " mean, p50 and p99 latency of both.",
    )
    cache.add_argument("--beir", type=Path, default=Path("../shared/datasets/scifact"))
    cache.add_argument("--requests", type=int, default=2000)
    cache.add_argument("--concurrency", type=int, default=8)
    cache.add_argument("--zipf-s", type=float, default=1.1)
    cache.add_argument(
        "--documents", type=int, default=1000, help="abstracts ingested (all relevant ones first)"
    )
    cache.set_defaults(handler=_bench_search_cache)


def _bench_embed(args: argparse.Namespace) -> int:
    from ragmeshd.bench.embed_server import report, run_bench

    if args.mesh:
        from ragmeshd.bench.embed_mesh import run_mesh_bench
        from ragmeshd.settings import load_settings

        print(
            run_mesh_bench(
                concurrency=args.concurrency,
                requests=args.requests,
                mesh_state_dir=args.mesh_state_dir,
                port=args.port,
                models_dir=load_settings().models_dir,
            ),
            flush=True,
        )
        return 0

    results = run_bench(
        concurrency=args.concurrency,
        requests=args.requests,
        target=args.target,
        api_key=args.api_key,
        port=args.port,
        raw_batch_size=args.raw_batch_size,
    )
    print(report(results, args.concurrency, args.requests), flush=True)
    return 0


def _bench_search_cache(args: argparse.Namespace) -> int:
    from ragmeshd.bench.search_cache import run_search_cache_bench
    from ragmeshd.settings import load_settings

    print(
        run_search_cache_bench(
            beir=args.beir,
            requests=args.requests,
            concurrency=args.concurrency,
            zipf_s=args.zipf_s,
            documents=args.documents,
            models_dir=load_settings().models_dir,
        ),
        flush=True,
    )
    return 0
