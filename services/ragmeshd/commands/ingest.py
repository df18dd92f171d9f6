"""`ragmesh ingest PATH... --collection NAME`: keep a collection in sync with folders.

Thin: the walk, extraction, sync plan and batching are ragmeshd.ingest and
ragmeshd.documents; this wires them to the running mesh (commands/convention.py: Envoy,
mutual TLS, the admin key or --api-key-file) and prints progress and a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

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
from ragmeshd.documents import PassageBudget
from ragmeshd.ingest.client import MeshDocuments
from ragmeshd.ingest.sync import SyncOptions, SyncReport, sync
from ragmeshd.progress import Progress
from ragmeshd.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    ingest = subparsers.add_parser(
        "ingest",
        help="put files and folders (txt, md, rst, html, pdf, docx) into a collection, in sync",
        description="Walk each PATH (folders recursively), extract the text of every"
        " supported file, cut it into passages on headings, paragraphs and sentences, and"
        " store one document per file in COLLECTION (created if missing) through the running"
        " mesh. Files whose content the mesh already holds are not sent again; with --prune,"
        " documents whose files are gone are deleted. Unreadable, binary, encrypted, scanned,"
        " empty or oversized files are skipped with a reason (docs/ingest.md). Exit codes:"
        " 0 done (skipped files included), 1 failure, 2 usage, 3 unreachable.",
    )
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    ingest.add_argument("--collection", required=True, metavar="NAME", help="the collection")
    ingest.add_argument(
        "--glob",
        action="append",
        default=[],
        metavar="PATTERN",
        help="take only files matching PATTERN (repeatable; `*` within a folder, `**` across"
        " folders; default: every supported suffix)",
    )
    ingest.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out files and folders matching PATTERN (repeatable; e.g. drafts, '*.tmp')",
    )
    ingest.add_argument(
        "--prune",
        action="store_true",
        help="delete the collection's documents under these PATHs whose files are gone",
    )
    ingest.add_argument(
        "--label",
        metavar="NAME",
        help="the root label of the one PATH in document ids (default: its folder's name and"
        " a hash of its absolute path)",
    )
    ingest.add_argument(
        "--acl",
        default="",
        metavar="GROUPS",
        help="comma-separated groups: only keys holding one of them see these documents"
        " (stored as their `acl`; default: every key allowed on the collection). A run with"
        " another --acl sends every file again",
    )
    add_json_option(ingest)
    add_mesh_client_options(ingest)
    ingest.set_defaults(handler=_ingest)


class _ProgressSink:
    """ragmeshd.progress on stderr: a bar on a terminal, a line every 10 s otherwise."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.passages = 0
        self.started = time.monotonic()

    def start(self, total_files: int) -> None:
        self.started = time.monotonic()
        self.progress = Progress("ingesting", total=total_files, unit="files", stream=sys.stderr)

    def advance(self, files: int, passages: int) -> None:
        if self.progress is None:
            return
        self.passages += passages
        rate = self.passages / max(time.monotonic() - self.started, 1e-9)
        self.progress.note(f"{self.passages} passages, {rate:.1f} passages/s")
        self.progress.advance(files)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def _ingest(args: argparse.Namespace) -> int:
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        raise CommandError(f"no such file or folder: {', '.join(missing)}", EXIT_USAGE)
    if args.label is not None and len(args.paths) > 1:
        raise CommandError("--label names one root: give one PATH with it", EXIT_USAGE)
    settings = settings_or_exit()
    report = asyncio.run(_run(settings, args))
    if args.json:
        print_json(report_json(report, args.collection))
    else:
        print_summary(report, args.collection)
    return EXIT_OK


def _acl(text: str) -> str:
    """`--acl`, checked as the server checks a document's `acl` (runtime/tenancy.py)."""
    from ragmeshd.runtime.tenancy import TenancyError, acl_text, parse_groups

    try:
        return acl_text(parse_groups(text)) if text.strip() else ""
    except TenancyError as exc:
        raise CommandError(f"--acl: {exc}", EXIT_USAGE) from None


async def _run(settings: Settings, args: argparse.Namespace) -> SyncReport:
    from ragmeshd.search.chunking import make_splitter

    splitter = make_splitter(settings)
    search = settings.search
    options = SyncOptions(
        collection=args.collection,
        budget=PassageBudget(
            search.passage_max_tokens, search.passage_overlap_tokens, search.passage_max_chars
        ),
        globs=tuple(args.glob),
        excludes=tuple(args.exclude),
        prune=args.prune,
        label=args.label,
        acl=_acl(args.acl),
    )
    target = mesh_target(settings, args.target)
    sink = _ProgressSink()
    try:
        async with mesh_channel(settings, args, retry_idempotent=True) as channel:
            store = MeshDocuments(channel, args.timeout)
            return await sync(args.paths, store, splitter.count_tokens, options, sink)
    except grpc.aio.AioRpcError as error:
        raise rpc_failure(error, target) from None
    finally:
        sink.close()


def report_json(report: SyncReport, collection: str) -> dict[str, Any]:
    return {
        "collection": collection,
        "collection_created": report.collection_created,
        "ingested": report.ingested,
        "added": report.added,
        "changed": report.changed,
        "unchanged": report.unchanged,
        "pruned": report.pruned,
        "skipped": [
            {"path": skip.name, "reason": skip.reason.value, "detail": skip.detail}
            for skip in report.skipped
        ],
        "problems": [{"path": path, "problem": problem} for path, problem in report.problems],
        "passages": report.passages,
        "upsert_calls": report.upsert_calls,
        "seconds": round(report.seconds, 3),
    }


def print_summary(report: SyncReport, collection: str) -> None:
    rate = report.passages / report.seconds if report.seconds > 0 else 0.0
    print(
        f"{collection}: {report.ingested} ingested ({len(report.added)} new,"
        f" {len(report.changed)} changed), {report.unchanged} unchanged,"
        f" {len(report.skipped)} skipped, {len(report.pruned)} pruned;"
        f" {report.passages} passages in {report.seconds:.1f} s ({rate:.1f} passages/s)"
    )
    reasons = Counter(skip.reason.value for skip in report.skipped)
    if reasons:
        print("skipped: " + ", ".join(f"{count} {reason}" for reason, count in reasons.items()))
        for skip in report.skipped:
            print(f"  {skip}")
    for path, problem in report.problems:
        print(f"  {path}: {problem}", file=sys.stderr)
