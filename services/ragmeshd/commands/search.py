"""`ragmesh search QUERY --collection NAME [--mode] [--top-k N] [--json]`: ranked passages
from the running mesh (through Envoy: commands/convention.py), with where each comes from."""

from __future__ import annotations

import argparse
import asyncio
import textwrap
from typing import Any

import grpc

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd.commands.convention import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_json_option,
    add_mesh_client_options,
    mesh_channel,
    mesh_target,
    print_json,
    rpc_failure,
    settings_or_exit,
)

MODES = {
    "hybrid": pb.SEARCH_MODE_HYBRID,
    "dense": pb.SEARCH_MODE_DENSE,
    "keyword": pb.SEARCH_MODE_KEYWORD,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser(
        "search",
        help="search a collection of the running mesh: ranked passages with their sources",
        description="Send QUERY to the search service through Envoy and print the best"
        " passage of each of the best documents: rank, score, source, title, section, page"
        " and text. Exit codes: 0 ok (also with no hits), 1 failure, 2 usage, 3 unreachable.",
    )
    search.add_argument("query", metavar="QUERY", help="the query, in quotes")
    search.add_argument("--collection", required=True, metavar="NAME")
    search.add_argument(
        "--mode", choices=sorted(MODES), default="hybrid", help="how to rank (default hybrid)"
    )
    search.add_argument("--top-k", type=int, default=10, help="hits, 1 to 100 (default 10)")
    add_json_option(search)
    add_mesh_client_options(search)
    search.set_defaults(handler=_search)


def hit_json(rank: int, hit: pb.SearchHit) -> dict[str, Any]:
    return {
        "rank": rank,
        "score": hit.score,
        "document_id": hit.document_id,
        "source": hit.source,
        "title": hit.title,
        "section": hit.section,
        "page": hit.page or None,
        "passage_index": hit.passage_index,
        "text": hit.passage_text,
    }


def _search(args: argparse.Namespace) -> int:
    if not args.query.strip():
        raise CommandError("QUERY is empty", EXIT_USAGE)
    if not 1 <= args.top_k <= 100:
        raise CommandError(f"--top-k is {args.top_k}; it must be 1 to 100", EXIT_USAGE)
    settings = settings_or_exit()
    target = mesh_target(settings, args.target)
    request = pb.SearchRequest(
        collection=args.collection, query=args.query, top_k=args.top_k, mode=MODES[args.mode]
    )

    async def run() -> pb.SearchResponse:
        async with mesh_channel(settings, args, retry_idempotent=True) as channel:
            response: pb.SearchResponse = await pb_grpc.SearchServiceStub(channel).Search(
                request, timeout=args.timeout
            )
            return response

    try:
        response = asyncio.run(run())
    except grpc.aio.AioRpcError as error:
        raise rpc_failure(error, target) from None
    hits = [hit_json(rank, hit) for rank, hit in enumerate(response.hits, start=1)]
    if args.json:
        print_json({"hits": hits})
        return EXIT_OK
    if not hits:
        print("no hits")
    for hit in hits:
        where = hit["source"] or hit["document_id"]
        if hit["page"]:
            where += f", page {hit['page']}"
        print(f"{hit['rank']}. {hit['score']:.4f}  {where}")
        heading = " > ".join(part for part in (hit["title"], hit["section"]) if part)
        if heading:
            print(f"   {heading}")
        print(textwrap.indent(textwrap.shorten(hit["text"], 400), "   "))
    return EXIT_OK
