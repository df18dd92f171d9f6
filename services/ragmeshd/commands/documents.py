"""`ragmesh documents list|delete --collection NAME [--source PREFIX]`: what a collection
holds, by source, and removing it (through the running mesh: commands/convention.py)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
from typing import Any

import grpc

from ragmesh.search.v1 import search_service_pb2 as pb
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
from ragmeshd.ingest.client import MeshDocuments


def register(subparsers: argparse._SubParsersAction) -> None:
    documents = subparsers.add_parser(
        "documents",
        help="list or delete a collection's documents by source",
        description="Documents of a collection as `ragmesh ingest` stored them (one per file;"
        " the source is the root label and the file's path). Exit codes: 0 ok, 1 failure,"
        " 2 usage, 3 unreachable.",
    )
    actions = documents.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="documents with source, title, passages, content hash and modification time"
    )
    listing.add_argument("--collection", required=True, metavar="NAME")
    listing.add_argument("--source", default="", metavar="PREFIX", help="sources starting so")
    listing.add_argument("--limit", type=int, default=None, help="at most this many")
    add_json_option(listing)
    add_mesh_client_options(listing)
    listing.set_defaults(handler=_list)
    delete = actions.add_parser("delete", help="delete every document whose source starts so")
    delete.add_argument("--collection", required=True, metavar="NAME")
    delete.add_argument("--source", required=True, metavar="PREFIX")
    add_json_option(delete)
    add_mesh_client_options(delete)
    delete.set_defaults(handler=_delete)


def summary_json(document: pb.DocumentSummary) -> dict[str, Any]:
    mtime = None
    if document.HasField("modify_time"):
        mtime = document.modify_time.ToDatetime(datetime.UTC).isoformat()
    return {
        "id": document.id,
        "source": document.source,
        "title": document.title,
        "passages": document.passage_count,
        "content_hash": document.content_hash,
        "modified": mtime,
    }


def _list(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    target = mesh_target(settings, args.target)

    async def run() -> list[pb.DocumentSummary]:
        async with mesh_channel(settings, args, retry_idempotent=True) as channel:
            return await MeshDocuments(channel, args.timeout).list_summaries(
                args.collection, args.source, args.limit
            )

    try:
        found = asyncio.run(run())
    except grpc.aio.AioRpcError as error:
        raise rpc_failure(error, target) from None
    if args.json:
        print_json({"documents": [summary_json(document) for document in found]})
        return EXIT_OK
    for document in found:
        row = summary_json(document)
        print(
            f"{row['source'] or row['id']}  {row['passages']} passages"
            f"  {(row['modified'] or '-')[:19]}  {row['content_hash'][:12] or '-'}"
            f"  {row['title']}"
        )
    print(f"{len(found)} documents")
    return EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    if not args.source:
        raise CommandError(
            "--source is empty: name the prefix of the sources to delete", EXIT_USAGE
        )
    settings = settings_or_exit()
    target = mesh_target(settings, args.target)

    async def run() -> int:
        async with mesh_channel(settings, args, retry_idempotent=True) as channel:
            return await MeshDocuments(channel, args.timeout).delete_by_source(
                args.collection, args.source
            )

    try:
        deleted = asyncio.run(run())
    except grpc.aio.AioRpcError as error:
        raise rpc_failure(error, target) from None
    if args.json:
        print_json({"deleted": deleted})
    else:
        print(f"deleted {deleted} documents whose source starts with {args.source!r}")
    return EXIT_OK
