"""`ragmesh ask QUESTION --collection NAME [--json]`: ask the running mesh a question.

The question goes to the coordinator's Ask through Envoy (the command convention of
commands/convention.py: mutual TLS with the state folder's client certificate, the key from
--api-key-file). On a terminal the answer streams as it is generated, then the numbered
sources it was built on (a `*` marks those the answer cites as [n]); `--json` prints one
object at the end instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import grpc

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as pb_grpc
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
from ragmeshd.settings import Settings

ROUTES = {
    pb.DECISION_UNSPECIFIED: "NONE",
    pb.DECISION_LOCAL: "LOCAL",
    pb.DECISION_REMOTE: "REMOTE",
    pb.DECISION_NONE: "NONE",
}
# Retrieval plus an answer from a language model on CPU.
ASK_TIMEOUT_S = 180.0


def register(subparsers: argparse._SubParsersAction) -> None:
    ask = subparsers.add_parser(
        "ask",
        help="ask the running mesh a question: the answer, then its numbered sources",
        description="Send QUESTION to the coordinator's Ask through Envoy. The answer streams"
        " to the terminal, then the passages it was built on, numbered as the answer cites"
        " them ([n]). Exit codes: 0 answered, 1 refused or failed, 2 usage, 3 unreachable.",
    )
    ask.add_argument("question", metavar="QUESTION", help="the question, in quotes")
    ask.add_argument(
        "--collection",
        action="append",
        default=[],
        metavar="NAME",
        help="a collection to search (repeatable; default: the coordinator's)",
    )
    ask.add_argument("--top-k", type=int, default=0, help="passages in the context (default 5)")
    ask.add_argument(
        "--max-answer-tokens", type=int, default=0, help="longest answer in tokens (default 512)"
    )
    add_json_option(ask)
    add_mesh_client_options(ask)
    ask.set_defaults(handler=_ask, timeout=ASK_TIMEOUT_S)


def _ask(args: argparse.Namespace) -> int:
    if not args.question.strip():
        raise CommandError("QUESTION is empty", EXIT_USAGE)
    settings = settings_or_exit()
    request = pb.AskRequest(
        query=args.question,
        collections=args.collection,
        top_k=args.top_k,
        max_answer_tokens=args.max_answer_tokens,
    )
    target = mesh_target(settings, args.target)
    return asyncio.run(_run(settings, target, request, args))


async def _run(
    settings: Settings, target: str, request: pb.AskRequest, args: argparse.Namespace
) -> int:
    answer: list[str] = []
    summary: pb.AskSummary | None = None
    sources: Sequence[pb.Source] = ()
    terminal = not args.json
    # The channel belongs to this event loop: made inside it.
    async with mesh_channel(settings, args) as channel:
        try:
            async for response in pb_grpc.CoordinatorServiceStub(channel).Ask(
                request, timeout=args.timeout
            ):
                if response.HasField("summary"):
                    summary = response.summary
                    continue
                if response.HasField("sources"):
                    sources = response.sources.sources
                    continue
                chunk = response.chunk
                if chunk.discard_previous:
                    answer.clear()
                    if terminal:
                        print("\n(the answer starts over)", flush=True)
                answer.append(chunk.text)
                if terminal:
                    print(chunk.text, end="", flush=True)
        except grpc.aio.AioRpcError as error:
            if terminal and answer:
                print()
            raise rpc_failure(error, target) from None
    if summary is None:
        raise CommandError("the answer ended without its summary")
    if args.json:
        print_json(answer_json("".join(answer), sources, summary))
    else:
        print()
        print_sources(sources, summary)
    return EXIT_OK


def source_json(source: pb.Source) -> dict[str, Any]:
    return {
        "number": source.number,
        "source": source.source,
        "title": source.title,
        "section": source.section,
        "page": source.page or None,
        "score": round(source.score, 4),
        "cited": source.cited,
        "collection": source.collection,
        "document_id": source.document_id,
        "text": source.text,
    }


def answer_json(
    answer: str, sources: Sequence[pb.Source], summary: pb.AskSummary
) -> dict[str, Any]:
    timings = summary.timings
    return {
        "answer": answer,
        "route": ROUTES[summary.answered_by],
        "decision": ROUTES[summary.decision],
        "reason": summary.reason,
        "model": summary.model,
        "fallback_reason": summary.fallback_reason,
        "confidence": round(summary.confidence, 4),
        "sources": [source_json(source) for source in sources],
        "interaction_id": summary.interaction_id,
        "timings_ms": {
            "search": round(timings.search_ms, 1),
            "first_chunk": round(timings.first_chunk_ms, 1),
            "generation": round(timings.generation_ms, 1),
            "total": round(timings.total_ms, 1),
        },
    }


def print_sources(sources: Sequence[pb.Source], summary: pb.AskSummary) -> None:
    model = f", {summary.model}" if summary.model else ""
    print(
        f"\n(answered by {ROUTES[summary.answered_by]}{model};"
        f" confidence {summary.confidence:.2f})",
        file=sys.stderr,
    )
    if not sources:
        print("Sources: none found")
        return
    print("Sources:")
    for source in sources:
        where = [part for part in (source.title, source.section) if part]
        if source.page:
            where.append(f"page {source.page}")
        detail = f" ({' / '.join(where)})" if where else ""
        mark = "*" if source.cited else " "
        print(f" {mark}[{source.number}] {source.source}{detail}  score {source.score:.3f}")
