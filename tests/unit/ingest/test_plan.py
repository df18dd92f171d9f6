"""The sync plan: send new and changed files, leave unchanged ones, prune only under the
run's roots and only with --prune."""

from __future__ import annotations

from ragmeshd.ingest.plan import RemoteDocument, plan_sync


def under(prefix: str):  # type: ignore[no-untyped-def]
    return lambda identifier: identifier.startswith(prefix)


REMOTE = [
    RemoteDocument("docs-1/same.md", "h-same"),
    RemoteDocument("docs-1/edited.md", "h-old"),
    RemoteDocument("docs-1/gone.md", "h-gone"),
    RemoteDocument("docs-1/unreadable.md", "h-u"),
    RemoteDocument("other-2/kept.md", "h-other"),
]
LOCAL = {
    "docs-1/same.md": "h-same",
    "docs-1/edited.md": "h-new",
    "docs-1/new.md": "h-n",
    "docs-1/unreadable.md": None,
}


def test_a_plan_sends_new_and_changed_files_only() -> None:
    plan = plan_sync(LOCAL, REMOTE, under("docs-1/"), prune=False)
    assert plan.added == ("docs-1/new.md",)
    assert plan.changed == ("docs-1/edited.md",)
    assert plan.unchanged == ("docs-1/same.md",)
    assert plan.send == ("docs-1/new.md", "docs-1/edited.md")
    assert plan.prune == ()


def test_prune_deletes_only_documents_under_the_roots_whose_files_are_gone() -> None:
    plan = plan_sync(LOCAL, REMOTE, under("docs-1/"), prune=True)
    assert plan.prune == ("docs-1/gone.md",)  # not other-2/..., not the unreadable file


def test_an_unchanged_folder_sends_nothing() -> None:
    local = {document.id: document.content_hash for document in REMOTE}
    plan = plan_sync(local, REMOTE, under("docs-1/"), prune=True)
    assert plan.send == () and plan.prune == ()
    assert len(plan.unchanged) == len(REMOTE)


def test_an_empty_mesh_gets_every_readable_file() -> None:
    plan = plan_sync(LOCAL, [], under("docs-1/"), prune=True)
    assert plan.added == ("docs-1/edited.md", "docs-1/new.md", "docs-1/same.md")
    assert plan.prune == ()
