"""A sync run's decisions against an in-memory store (the same calls the mesh gets through
ragmeshd.ingest.client; tests/integration/ingest runs them against the real mesh)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ragmeshd.documents import PassageBudget, SkipReason
from ragmeshd.ingest.plan import RemoteDocument
from ragmeshd.ingest.sync import OutgoingDocument, SyncOptions, sync
from tests.unit.documents.conftest import write_pdf, write_scanned_pdf


class MemoryStore:
    def __init__(self) -> None:
        self.collections: dict[str, dict[str, OutgoingDocument]] = {}
        self.upsert_calls = 0

    async def ensure_collection(self, collection: str) -> bool:
        created = collection not in self.collections
        self.collections.setdefault(collection, {})
        return created

    async def list_documents(self, collection: str, source_prefix: str) -> list[RemoteDocument]:
        return [
            RemoteDocument(document.id, document.content_hash)
            for document in self.collections[collection].values()
            if document.source.startswith(source_prefix)
        ]

    async def upsert(self, collection: str, documents: Sequence[OutgoingDocument]) -> int:
        self.upsert_calls += 1
        for document in documents:
            self.collections[collection][document.id] = document
        return sum(len(document.passages) for document in documents)

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        return sum(self.collections[collection].pop(i, None) is not None for i in ids)


def words(text: str) -> int:
    return len(text.split())


OPTIONS = SyncOptions("notes", PassageBudget(50, 10, 2000), batch_documents=2)


def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# A\n\n## One\n\nFirst file.\n")
    (root / "sub" / "b.txt").write_text("Second file.\n\nMore.")
    (root / "c.html").write_text("<main><h1>C</h1><p>Third.</p></main>")
    write_pdf(root / "d.pdf", ["Page one.", "Page two."])
    write_scanned_pdf(root / "scan.pdf", tmp_path / "scan.png")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n garbage")
    (root / "empty.txt").write_text("")
    return root


async def test_a_second_run_over_an_unchanged_folder_sends_nothing(tmp_path: Path) -> None:
    root = folder(tmp_path)
    store = MemoryStore()
    first = await sync([root], store, words, OPTIONS)
    assert first.collection_created
    assert len(first.added) == 4 and first.changed == [] and first.unchanged == 0
    assert {skip.reason for skip in first.skipped} == {
        SkipReason.NO_TEXT_LAYER,
        SkipReason.UNREADABLE,
        SkipReason.EMPTY,
    }
    assert first.upsert_calls == 2  # 4 documents, 2 a write
    stored = store.collections["notes"]
    pdf = next(document for document in stored.values() if document.id.endswith("/d.pdf"))
    assert [(p.page, p.text) for p in pdf.passages] == [(1, "Page one."), (2, "Page two.")]
    calls = store.upsert_calls
    second = await sync([root], store, words, OPTIONS)
    assert store.upsert_calls == calls and second.upsert_calls == 0
    assert second.unchanged == 4 and second.ingested == 0


async def test_a_changed_file_is_replaced_and_prune_removes_deleted_ones(tmp_path: Path) -> None:
    root = folder(tmp_path)
    store = MemoryStore()
    await sync([root], store, words, OPTIONS)
    (root / "a.md").write_text("# A\n\n## Two\n\nEdited.\n")
    (root / "sub" / "b.txt").unlink()
    kept = await sync([root], store, words, OPTIONS)
    assert [i.rsplit("/", 1)[1] for i in kept.changed] == ["a.md"]
    assert kept.pruned == [] and len(store.collections["notes"]) == 4
    pruned = await sync([root], store, words, SyncOptions(**{**OPTIONS.__dict__, "prune": True}))
    assert [i.rsplit("/", 1)[1] for i in pruned.pruned] == ["b.txt"]
    assert pruned.ingested == 0
    edited = next(d for d in store.collections["notes"].values() if d.id.endswith("a.md"))
    assert [(p.section, p.text) for p in edited.passages] == [("Two", "Edited.")]


async def test_prune_leaves_other_roots_alone(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        (root / "README.md").write_text(f"# {root.name}\n\ntext")
    store = MemoryStore()
    await sync([one, two], store, words, OPTIONS)
    assert len(store.collections["notes"]) == 2  # same names, two ids
    (one / "README.md").unlink()
    (one / "other.md").write_text("new")
    report = await sync([one], store, words, SyncOptions(**{**OPTIONS.__dict__, "prune": True}))
    assert [i.rsplit("/", 1)[1] for i in report.pruned] == ["README.md"]
    assert sorted(d.source.split("-")[0] for d in store.collections["notes"].values()) == [
        "one",
        "two",
    ]


class RefusingStore(MemoryStore):
    """Refuses any write that holds a document whose title says so, as the mesh refuses an
    invalid document with INVALID_ARGUMENT."""

    async def upsert(self, collection: str, documents: Sequence[OutgoingDocument]) -> int:
        from ragmeshd.ingest.sync import DocumentRefusedError

        if any("Refuse" in document.title for document in documents):
            self.upsert_calls += 1
            raise DocumentRefusedError("documents[0].title is bad")
        return await super().upsert(collection, documents)


async def test_a_document_the_mesh_refuses_is_skipped_and_the_rest_stored(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    for name in ("a", "b", "c"):
        (root / f"{name}.md").write_text(f"# {'Refuse me' if name == 'b' else name}\n\ntext")
    store = RefusingStore()
    report = await sync([root], store, words, OPTIONS)
    assert sorted(i.rsplit("/", 1)[1] for i in report.added) == ["a.md", "c.md"]
    assert [(Path(s.name).name, s.reason) for s in report.skipped] == [("b.md", SkipReason.REFUSED)]
    assert "title is bad" in report.skipped[0].detail


async def test_a_changed_acl_sends_every_file_again_and_is_stored(tmp_path: Path) -> None:
    """`ragmesh ingest --acl`: the documents carry the groups, and the unchanged-file check
    notices a run with other groups (the stored hash covers them)."""
    from ragmeshd.ingest.client import document_to_proto

    root = folder(tmp_path)
    store = MemoryStore()
    finance = SyncOptions(**{**OPTIONS.__dict__, "acl": "finance"})
    first = await sync([root], store, words, finance)
    assert len(first.added) == 4
    stored = list(store.collections["notes"].values())
    assert {d.acl for d in stored} == {"finance"}
    assert document_to_proto(stored[0]).metadata["acl"].string_value == "finance"
    assert (await sync([root], store, words, finance)).unchanged == 4
    board = await sync([root], store, words, SyncOptions(**{**OPTIONS.__dict__, "acl": "board"}))
    assert len(board.changed) == 4 and board.unchanged == 0
    assert {d.acl for d in store.collections["notes"].values()} == {"board"}
    opened = await sync([root], store, words, OPTIONS)
    assert len(opened.changed) == 4
    assert {d.acl for d in store.collections["notes"].values()} == {""}
    assert "acl" not in document_to_proto(next(iter(store.collections["notes"].values()))).metadata
