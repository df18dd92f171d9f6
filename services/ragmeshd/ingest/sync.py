"""One `ragmesh ingest` run: walk, hash, compare with the mesh, send what changed, prune.

The mesh is the source of truth: a run asks it which documents it holds under each root
(ListDocuments by source prefix, with their content hashes), so a second run over an unchanged
folder sends nothing, and two machines ingesting the same folder agree. A changed file is sent
whole and replaces its document's passages in one write (UpsertDocuments is atomic). Files are
read, extracted and split in a worker thread while earlier batches are being embedded and
stored, with at most `in_flight` writes outstanding.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ragmeshd.documents import PassageBudget, Skipped, content_hash, extract_bytes, split_document
from ragmeshd.documents.extract import read_file
from ragmeshd.documents.limits import Limits
from ragmeshd.documents.model import Passage, SkipReason
from ragmeshd.ingest.plan import RemoteDocument, SyncPlan, plan_sync
from ragmeshd.ingest.walk import LocalFile, Walk, walk

CountTokens = Callable[[str], int]


@dataclass(frozen=True)
class OutgoingDocument:
    """One file's document as it is sent: its passages with their metadata."""

    id: str
    source: str
    title: str
    content_hash: str
    mtime_ns: int
    passages: list[Passage]
    acl: str = ""  # the groups that may see it (docs/security.md, Tenancy); empty: none


class DocumentRefusedError(Exception):
    """The mesh refused a write as invalid (INVALID_ARGUMENT): a bad document, not a failure
    of the run."""


class DocumentStore(Protocol):
    """What a sync needs from the mesh (ragmeshd.ingest.client.MeshDocuments over gRPC)."""

    async def ensure_collection(self, collection: str) -> bool:
        """Create the collection if it does not exist; whether it was created."""
        ...

    async def list_documents(self, collection: str, source_prefix: str) -> list[RemoteDocument]: ...

    async def upsert(self, collection: str, documents: Sequence[OutgoingDocument]) -> int:
        """Store the documents (replacing same ids); the passages stored. Raises
        DocumentRefusedError when the mesh refuses them as invalid."""
        ...

    async def delete(self, collection: str, ids: Sequence[str]) -> int: ...


@dataclass(frozen=True)
class SyncOptions:
    collection: str
    budget: PassageBudget
    globs: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    prune: bool = False
    label: str | None = None
    # Groups stored as every document's `acl` (`--acl`), checked; empty: visible to every key
    # allowed on the collection.
    acl: str = ""
    limits: Limits = field(default_factory=Limits)
    # A write holds at most this many documents and passages (a batch of whole documents;
    # one larger document goes alone).
    batch_documents: int = 64
    batch_passages: int = 512
    in_flight: int = 2
    delete_batch: int = 1000


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    passages: int = 0
    upsert_calls: int = 0
    seconds: float = 0.0
    problems: list[tuple[str, str]] = field(default_factory=list)
    collection_created: bool = False

    @property
    def ingested(self) -> int:
        return len(self.added) + len(self.changed)


class SyncProgress(Protocol):
    """Told as files are decided (unchanged, skipped) or stored."""

    def start(self, total_files: int) -> None: ...

    def advance(self, files: int, passages: int) -> None: ...


class _Quiet:
    def start(self, total_files: int) -> None:
        pass

    def advance(self, files: int, passages: int) -> None:
        pass


def _prepare(
    file: LocalFile, data: bytes, digest: str, count: CountTokens, options: SyncOptions
) -> OutgoingDocument | Skipped:
    extracted = extract_bytes(str(file.path), data, None, options.limits)
    if isinstance(extracted, Skipped):
        return extracted
    passages = split_document(extracted, count, options.budget)
    if not passages:
        return Skipped(str(file.path), SkipReason.EMPTY, "no text in the file")
    return OutgoingDocument(
        file.document_id,
        file.source,
        extracted.title,
        digest,
        file.mtime_ns,
        passages,
        options.acl,
    )


def stored_hash(data: bytes, acl: str) -> str:
    """The hash a document is stored and compared with: the file's content hash, and with an
    `acl` the hash of the bytes and the groups together, so a run with another `--acl` sees
    the file as changed and sends it again (ListDocuments shows hashes, not metadata)."""
    if not acl:
        return content_hash(data)
    return content_hash(data + b"\0acl=" + acl.encode())


def _read_and_prepare(
    file: LocalFile, count: CountTokens, options: SyncOptions
) -> OutgoingDocument | Skipped:
    data = read_file(file.path, options.limits)
    if isinstance(data, Skipped):
        return data
    return _prepare(file, data, stored_hash(data, options.acl), count, options)


async def sync(
    paths: Sequence[Path],
    store: DocumentStore,
    count_tokens: CountTokens,
    options: SyncOptions,
    progress: SyncProgress | None = None,
) -> SyncReport:
    started = time.monotonic()
    progress = progress or _Quiet()
    report = SyncReport()
    walked: Walk = await asyncio.to_thread(
        walk, paths, globs=options.globs, excludes=options.excludes, label=options.label
    )
    report.problems.extend(walked.problems)
    report.collection_created = await store.ensure_collection(options.collection)
    remote: dict[str, RemoteDocument] = {}
    if not report.collection_created:
        for root in walked.roots:
            for document in await store.list_documents(options.collection, root.prefix):
                if root.covers(document.id):
                    remote[document.id] = document
    progress.start(len(walked.files))
    hashes = await _hash_files(walked, options, report)
    plan: SyncPlan = plan_sync(
        hashes,
        remote.values(),
        lambda identifier: any(root.covers(identifier) for root in walked.roots),
        prune=options.prune,
    )
    report.unchanged = len(plan.unchanged)
    progress.advance(len(plan.unchanged) + len(report.skipped), 0)
    sender = _Sender(store, options, report, progress, walked, set(remote))
    await sender.send_all(plan.send, count_tokens)
    for start in range(0, len(plan.prune), options.delete_batch):
        chunk = list(plan.prune[start : start + options.delete_batch])
        await store.delete(options.collection, chunk)
        report.pruned.extend(chunk)
    report.added.sort()
    report.changed.sort()
    report.seconds = time.monotonic() - started
    return report


async def _hash_files(
    walked: Walk, options: SyncOptions, report: SyncReport
) -> dict[str, str | None]:
    """Every file's content hash (None for one that cannot be read, reported as skipped).
    Those to send are read again when their turn comes: a folder's bytes are never all in
    memory at once."""
    hashes: dict[str, str | None] = {}
    for file in walked.files:
        data = await asyncio.to_thread(read_file, file.path, options.limits)
        if isinstance(data, Skipped):
            report.skipped.append(data)
            hashes[file.document_id] = None
        else:
            hashes[file.document_id] = stored_hash(data, options.acl)
    return hashes


class _Sender:
    """Extracts the files to send one after the other (in a worker thread) and writes them in
    batches of whole documents, with at most `in_flight` writes outstanding."""

    def __init__(
        self,
        store: DocumentStore,
        options: SyncOptions,
        report: SyncReport,
        progress: SyncProgress,
        walked: Walk,
        stored: set[str],
    ) -> None:
        self.store, self.options, self.report, self.progress = store, options, report, progress
        self.by_id = {file.document_id: file for file in walked.files}
        self.stored = stored
        self.pending: set[asyncio.Task[None]] = set()
        self.batch: list[OutgoingDocument] = []

    async def send_all(self, identifiers: Sequence[str], count_tokens: CountTokens) -> None:
        options = self.options
        try:
            for identifier in identifiers:
                file = self.by_id[identifier]
                prepared = await asyncio.to_thread(_read_and_prepare, file, count_tokens, options)
                if isinstance(prepared, Skipped):
                    self.report.skipped.append(prepared)
                    self.progress.advance(1, 0)
                    continue
                passages = sum(len(document.passages) for document in self.batch)
                if self.batch and (
                    len(self.batch) >= options.batch_documents
                    or passages + len(prepared.passages) > options.batch_passages
                ):
                    await self.flush()
                self.batch.append(prepared)
            await self.flush()
            for outcome in await asyncio.gather(*self.pending, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
            self.pending.clear()
        finally:
            for task in self.pending:
                task.cancel()

    async def flush(self) -> None:
        if not self.batch:
            return
        documents, self.batch = self.batch, []
        while len(self.pending) >= self.options.in_flight:
            done, _ = await asyncio.wait(self.pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self.pending.discard(task)
                task.result()
        self.pending.add(asyncio.create_task(self.send(documents)))

    async def send(self, documents: list[OutgoingDocument]) -> None:
        report = self.report
        try:
            stored = await self.store.upsert(self.options.collection, documents)
        except DocumentRefusedError as refused:
            report.upsert_calls += 1
            if len(documents) > 1:  # find the one refused: each alone
                for document in documents:
                    await self.send([document])
                return
            path = str(self.by_id[documents[0].id].path)
            report.skipped.append(Skipped(path, SkipReason.REFUSED, str(refused)))
            self.progress.advance(1, 0)
            return
        report.upsert_calls += 1
        report.passages += stored
        for document in documents:
            (report.changed if document.id in self.stored else report.added).append(document.id)
        self.progress.advance(len(documents), stored)
