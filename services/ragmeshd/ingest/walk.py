"""The files under the paths given to `ragmesh ingest`, with their document ids.

A document's id is its root's label, a slash and its path relative to that root (POSIX
separators): `notes-1f0c2a9e/trips/alps.md`. The root is the folder given (for a file given
on its own, the folder holding it, so the file keeps the id it has when its folder is
ingested). The label is the folder's name and the first 8 hex digits of the SHA-256 of its
absolute path, so two folders with the same name (two projects' `docs/`) never share an id
and the same folder gets the same ids in every run; `--label` replaces it (to keep ids when a
folder moves or is ingested from another machine). A document's `source`, which
`ragmesh documents list|delete --source` filter on, is the same string.

Hidden files and folders (names starting with ".") are never walked, nor are symbolic links
to folders (a link cycle cannot loop). Without --glob, files with a supported suffix are taken;
with --glob, files matching any of them (an unsupported one is then skipped with a reason).
--exclude drops files and whole folders.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ragmeshd import defaults
from ragmeshd.documents.extract import SUPPORTED_SUFFIXES
from ragmeshd.ingest.patterns import Pattern, any_match

# The search service's limit on a document id.
MAX_DOCUMENT_ID_CHARS = defaults.MAX_DOCUMENT_ID_CHARS
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# Document ids may not hold control characters (a file name with a newline is skipped).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAX_LABEL_NAME_CHARS = 40


def root_label(folder: Path) -> str:
    """`<folder name>-<8 hex digits of the SHA-256 of its absolute path>`."""
    absolute = folder.resolve()
    digest = hashlib.sha256(str(absolute).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    name = _LABEL_CHARS.sub("-", absolute.name).strip("-")[:_MAX_LABEL_NAME_CHARS] or "root"
    return f"{name}-{digest}"


def document_id(label: str, relative: str, max_chars: int = MAX_DOCUMENT_ID_CHARS) -> str:
    """`label/relative`; one longer than `max_chars` keeps its head and ends in a hash of the
    whole path, so it stays unique and readable."""
    full = f"{label}/{relative}"
    if len(full) <= max_chars:
        return full
    digest = hashlib.sha256(full.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{full[: max_chars - len(digest) - 1]}~{digest}"


@dataclass(frozen=True)
class Root:
    """A folder given (or the folder of a file given) and its label."""

    path: Path
    label: str
    only: str | None = None  # the relative path of the one file given, if a file was given

    @property
    def prefix(self) -> str:
        """The source prefix of every document under this root (what ListDocuments filters)."""
        return f"{self.label}/" if self.only is None else f"{self.label}/{self.only}"

    def covers(self, identifier: str) -> bool:
        """Whether a stored document belongs to this root (and so may be pruned by it)."""
        if self.only is None:
            return identifier.startswith(f"{self.label}/")
        return identifier == document_id(self.label, self.only)


@dataclass(frozen=True)
class LocalFile:
    root: Root
    path: Path
    relative: str  # POSIX path relative to the root
    document_id: str
    size: int
    mtime_ns: int

    @property
    def source(self) -> str:
        return f"{self.root.label}/{self.relative}"


@dataclass
class Walk:
    roots: list[Root] = field(default_factory=list)
    files: list[LocalFile] = field(default_factory=list)
    # PATHs given that do not exist, and folders that could not be listed, with the reason.
    problems: list[tuple[str, str]] = field(default_factory=list)


def _posix(relative: Path) -> str:
    return PurePosixPath(*relative.parts).as_posix()


def walk(
    paths: Sequence[Path],
    *,
    globs: Iterable[str] = (),
    excludes: Iterable[str] = (),
    label: str | None = None,
) -> Walk:
    """The files to ingest under `paths`, sorted by document id, each once."""
    include = tuple(Pattern(text) for text in globs)
    exclude = tuple(Pattern(text) for text in excludes)
    if label is not None and len(paths) > 1:
        raise ValueError("--label names one root: give one PATH with it")
    result = Walk()
    seen: set[Path] = set()
    by_id: dict[str, LocalFile] = {}
    for given in paths:
        if not given.exists():
            result.problems.append((str(given), "no such file or folder"))
            continue
        if given.is_dir():
            root = Root(given.resolve(), label or root_label(given))
            result.roots.append(root)
            candidates = _walk_folder(root, include, exclude, result)
        else:
            folder = given.resolve().parent
            root = Root(folder, label or root_label(folder), given.name)
            result.roots.append(root)
            candidates = [(given.resolve(), given.name)]
        for path, relative in candidates:
            if _CONTROL.search(relative):
                result.problems.append((str(path), "its name has a control character"))
                continue
            real = path.resolve()
            if real in seen:
                continue
            try:
                stat = path.stat()
            except OSError as error:
                result.problems.append((str(path), error.strerror or str(error)))
                continue
            seen.add(real)
            identifier = document_id(root.label, relative)
            by_id.setdefault(
                identifier,
                LocalFile(root, path, relative, identifier, stat.st_size, stat.st_mtime_ns),
            )
    result.files = [by_id[key] for key in sorted(by_id)]
    return result


def _walk_folder(
    root: Root, include: tuple[Pattern, ...], exclude: tuple[Pattern, ...], result: Walk
) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []

    def on_error(error: OSError) -> None:
        result.problems.append((str(error.filename), error.strerror or str(error)))

    for folder, folders, files in os.walk(root.path, onerror=on_error):
        here = Path(folder)
        base = _posix(here.relative_to(root.path)) if here != root.path else ""
        folders[:] = sorted(
            name
            for name in folders
            if not name.startswith(".")
            and not any_match(exclude, f"{base}/{name}" if base else name)
        )
        for name in sorted(files):
            if name.startswith("."):
                continue
            relative = f"{base}/{name}" if base else name
            if any_match(exclude, relative):
                continue
            if include:
                if not any_match(include, relative):
                    continue
            elif PurePosixPath(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            path = here / name
            if not path.is_file():  # a broken link, a socket, a fifo
                continue
            found.append((path, relative))
    return found
