"""`ragmesh bench ...`: performance measurements that print their numbers."""

from __future__ import annotations

import argparse

from services.commands.bench_overload import register_overload_bench
from services.search.bench import register_search_bench


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
    embed.set_defaults(handler=_bench_embed)

    register_search_bench(targets)
    register_overload_bench(targets)


def _bench_embed(args: argparse.Namespace) -> int:
    from services.embeddings.bench import report, run_bench

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
