"""Walking the PATHs of `ragmesh ingest`: recursion, --glob, --exclude, ids per root."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragmeshd.ingest.patterns import Pattern
from ragmeshd.ingest.walk import MAX_DOCUMENT_ID_CHARS, document_id, root_label, walk


def make(root: Path, *relatives: str) -> None:
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {relative}\n\ntext\n")


def relatives(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [file.relative for file in result.files]


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.md", "a.md", True),
        ("*.md", "x/y/a.md", True),
        ("*.md", "a.mdx", False),
        ("docs/*.md", "docs/a.md", True),
        ("docs/*.md", "docs/x/a.md", False),
        ("docs/**/*.md", "docs/a.md", True),
        ("docs/**/*.md", "docs/x/y/a.md", True),
        ("docs/**", "docs/x/y/a.md", True),
        ("drafts", "notes/drafts", True),
        ("drafts", "notes/drafts.md", False),
        ("/top.md", "top.md", True),
        ("./top.md", "top.md", True),
        ("top.md", "sub/top.md", True),
        ("note?.txt", "note1.txt", True),
        ("note[0-2].txt", "note3.txt", False),
        ("note[!0-2].txt", "note3.txt", True),
        ("a+b(1).md", "a+b(1).md", True),
    ],
)
def test_patterns(pattern: str, path: str, expected: bool) -> None:
    assert Pattern(pattern).matches(path) is expected


def test_a_folder_is_walked_recursively_for_supported_files_skipping_hidden_ones(
    tmp_path: Path,
) -> None:
    make(
        tmp_path,
        "README.md",
        "guide/install.rst",
        "guide/deep/er/page.html",
        "paper.pdf",
        "notes.txt",
        "image.png",
        "script.py",
        ".hidden.md",
        ".git/HEAD.md",
        "guide/.cache/x.md",
    )
    result = walk([tmp_path])
    assert relatives(result) == [
        "README.md",
        "guide/deep/er/page.html",
        "guide/install.rst",
        "notes.txt",
        "paper.pdf",
    ]
    label = root_label(tmp_path)
    assert result.files[0].document_id == f"{label}/README.md"
    assert result.files[0].source == f"{label}/README.md"
    assert result.files[0].size == len("# README.md\n\ntext\n")
    assert result.problems == []


def test_glob_and_exclude(tmp_path: Path) -> None:
    make(tmp_path, "a.md", "b.txt", "drafts/c.md", "x/drafts/d.md", "x/e.md", "x/f.log")
    assert sorted(relatives(walk([tmp_path], globs=["*.md"]))) == sorted(
        ["a.md", "drafts/c.md", "x/drafts/d.md", "x/e.md"]
    )
    assert sorted(relatives(walk([tmp_path], excludes=["drafts"]))) == ["a.md", "b.txt", "x/e.md"]
    assert sorted(relatives(walk([tmp_path], globs=["x/**"], excludes=["*.log"]))) == [
        "x/drafts/d.md",
        "x/e.md",
    ]
    # a glob takes files of any suffix (extraction skips what it cannot read, with a reason)
    assert relatives(walk([tmp_path], globs=["*.log"])) == ["x/f.log"]


def test_two_roots_with_the_same_file_names_do_not_collide(tmp_path: Path) -> None:
    make(tmp_path / "one" / "docs", "README.md")
    make(tmp_path / "two" / "docs", "README.md")
    result = walk([tmp_path / "one" / "docs", tmp_path / "two" / "docs"])
    ids = [file.document_id for file in result.files]
    assert len(set(ids)) == 2
    assert all(identifier.startswith("docs-") for identifier in ids)
    assert all(identifier.endswith("/README.md") for identifier in ids)
    # the same folder gets the same ids in every run, however it is spelled
    again = walk([tmp_path / "one" / ".." / "one" / "docs"])
    assert again.files[0].document_id in ids


def test_a_file_given_alone_keeps_the_id_it_has_through_its_folder(tmp_path: Path) -> None:
    make(tmp_path, "a.md", "b.md", "c.bin")
    whole = {file.relative: file.document_id for file in walk([tmp_path]).files}
    alone = walk([tmp_path / "b.md", tmp_path / "c.bin"])
    assert alone.files[0].document_id == whole["b.md"]
    # a file named explicitly is taken whatever its suffix
    assert relatives(alone) == ["b.md", "c.bin"]
    root = alone.roots[0]
    assert root.covers(whole["b.md"]) and not root.covers(whole["a.md"])
    folder_root = walk([tmp_path]).roots[0]
    assert folder_root.covers(whole["a.md"]) and not folder_root.covers("other-1234/a.md")


def test_a_file_reached_twice_is_listed_once_and_missing_paths_are_reported(
    tmp_path: Path,
) -> None:
    make(tmp_path, "a.md")
    result = walk([tmp_path, tmp_path / "a.md", tmp_path / "nope"])
    assert relatives(result) == ["a.md"]
    assert result.problems == [(str(tmp_path / "nope"), "no such file or folder")]


def test_label_replaces_the_default_and_names_one_root(tmp_path: Path) -> None:
    make(tmp_path, "a.md")
    assert walk([tmp_path], label="notes").files[0].document_id == "notes/a.md"
    with pytest.raises(ValueError, match="one PATH"):
        walk([tmp_path, tmp_path], label="notes")


def test_folder_links_are_not_followed(tmp_path: Path) -> None:
    make(tmp_path, "real/a.md")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")
    assert relatives(walk([tmp_path])) == ["real/a.md"]


def test_long_ids_stay_unique_and_within_the_limit() -> None:
    long_a = "x" * 300 + "/a.md"
    long_b = "x" * 300 + "/b.md"
    first, second = document_id("lbl", long_a), document_id("lbl", long_b)
    assert first != second
    assert len(first) == len(second) == MAX_DOCUMENT_ID_CHARS
    assert document_id("lbl", "short.md") == "lbl/short.md"


def test_a_file_name_with_a_control_character_is_a_problem_not_an_id(tmp_path: Path) -> None:
    make(tmp_path, "fine.md")
    (tmp_path / "bad\nname.md").write_text("text")
    result = walk([tmp_path])
    assert relatives(result) == ["fine.md"]
    assert result.problems == [(str(tmp_path / "bad\nname.md"), "its name has a control character")]


def test_metadata_strings_lose_control_characters() -> None:
    from ragmeshd.documents.model import Passage
    from ragmeshd.ingest.client import document_to_proto
    from ragmeshd.ingest.sync import OutgoingDocument

    sent = document_to_proto(
        OutgoingDocument(
            "r/a.pdf", "r/a.pdf", "Title\x00with\x1fcontrols", "ab" * 32, 1_500_000_000_123,
            [Passage(0, "text", "T", "Intro\x07", 3, 1)],
        )
    )  # fmt: skip
    assert sent.title == "Title with controls"
    assert sent.passages[0].section == "Intro " and sent.passages[0].page == 3
    assert (sent.modify_time.seconds, sent.modify_time.nanos) == (1500, 123)
