"""Every `ragmesh` command and flag that README.md and docs/ name exists: each command line in
a fenced block or an inline code span is walked through the CLI's argparse parser (global
options, subcommands, then flags of the last one).

A fenced block preceded by the marker line

    <!-- doc-check: needs a Kubernetes cluster -->

is one no test here can run (it needs a cluster, `kubectl` against it); its `ragmesh` lines are
still checked for commands and flags, since those do not depend on where they run."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragmeshd.cli import build_parser
from tests.helpers import REPO_ROOT

MARKER = "<!-- doc-check: needs a Kubernetes cluster -->"
DOCS = [
    REPO_ROOT / "README.md",
    *sorted(p for p in (REPO_ROOT / "docs").rglob("*.md") if "node_modules" not in p.parts),
]
# `ragmesh` followed by a subcommand word, as written in a shell line or a code span; not the
# namespace of `kubectl -n ragmesh …`.
COMMAND = re.compile(r"(?<!-n )(?<!--namespace )(?:^|(?<=[\s`(/$]))ragmesh((?:\s+[^\s`|;&)]+)+)")


def code_texts(text: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a fenced block and every inline code span."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield number, line
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def problems_of(words: list[str], root: argparse.ArgumentParser) -> list[str]:
    """What in `ragmesh WORDS` does not exist: an unknown subcommand or flag."""
    parser, path, found = root, [], []
    takes_value = False
    for word in words:
        if word.startswith("#"):
            break  # a shell comment
        if takes_value:
            takes_value = False
            continue
        choices = _subparsers(parser)
        if word.startswith("--"):
            flag, given = word.split("=", 1)[0], "=" in word
            # Global options (--state-dir) only before the subcommand, as argparse reads them.
            action = _action(parser, flag) or (None if path else _action(root, flag))
            if action is None:
                found.append(f"ragmesh {' '.join(path)}: no flag {flag}")
            else:
                takes_value = action.nargs != 0 and not given
        elif choices and not word.startswith("-"):
            if word in choices:
                parser, path = choices[word], [*path, word]
            elif re.fullmatch(r"[a-z][a-z-]*", word) and not path:
                found.append(f"no command `ragmesh {word}`")
                break
            else:
                # A placeholder (COMMAND, ACTION, …) or an argument: stop at it.
                break
    return found


def doc_lines() -> Iterator[tuple[str, str]]:
    for path in DOCS:
        for number, text in code_texts(path.read_text()):
            for match in COMMAND.finditer(text):
                yield f"{path.relative_to(REPO_ROOT)}:{number}", "ragmesh" + match[1]


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)[1:]
    except ValueError:
        return line.split()[1:]


def test_the_docs_name_ragmesh_commands() -> None:
    assert sum(1 for _ in doc_lines()) > 50


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_command_and_flag_in_the_docs_exists(path: Path) -> None:
    root = build_parser()
    wrong = []
    for number, text in code_texts(path.read_text()):
        for match in COMMAND.finditer(text):
            for problem in problems_of(_words("ragmesh" + match[1]), root):
                wrong.append(f"{path.relative_to(REPO_ROOT)}:{number}: {problem}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_finds_what_does_not_exist() -> None:
    root = build_parser()
    assert problems_of(["bench", "embed", "--api-key", "k"], root) == [
        "ragmesh bench embed: no flag --api-key"
    ]
    assert problems_of(["nosuch"], root) == ["no command `ragmesh nosuch`"]
    assert problems_of(["--state-dir", "x", "status", "--json"], root) == []
    assert problems_of(["up", "--detach"], root) == []
