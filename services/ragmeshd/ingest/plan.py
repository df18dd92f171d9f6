"""The sync plan: what a run sends, leaves alone and prunes, from the local files' hashes and
the mesh's list of (id, hash) under the same roots. The mesh is the source of truth; nothing
about earlier runs is kept on disk."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteDocument:
    """A stored document as ListDocuments returns it."""

    id: str
    content_hash: str


@dataclass(frozen=True)
class SyncPlan:
    added: tuple[str, ...]  # not in the mesh: extract and send
    changed: tuple[str, ...]  # in the mesh with another hash: extract and replace
    unchanged: tuple[str, ...]  # same hash: nothing is sent
    prune: tuple[str, ...]  # in the mesh under the roots, no file any more (with --prune)

    @property
    def send(self) -> tuple[str, ...]:
        return self.added + self.changed


def plan_sync(
    local: Mapping[str, str | None],
    remote: Iterable[RemoteDocument],
    covered: Callable[[str], bool],
    *,
    prune: bool,
) -> SyncPlan:
    """`local` maps each walked file's document id to its content hash (None for a file that
    could not be read: it is neither sent nor pruned, its stored copy stays). `remote` is what
    the mesh holds; `covered(id)` says whether a stored document lies under the roots of this
    run, the only ones --prune may delete."""
    stored = {document.id: document.content_hash for document in remote}
    added: list[str] = []
    changed: list[str] = []
    unchanged: list[str] = []
    for identifier in sorted(local):
        digest = local[identifier]
        if digest is None:
            continue
        if identifier not in stored:
            added.append(identifier)
        elif stored[identifier] != digest:
            changed.append(identifier)
        else:
            unchanged.append(identifier)
    gone = [] if not prune else [i for i in stored if i not in local and covered(i)]
    return SyncPlan(tuple(added), tuple(changed), tuple(unchanged), tuple(sorted(gone)))
