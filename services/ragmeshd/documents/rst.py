"""reStructuredText, read for its sections without docutils."""

from __future__ import annotations

import re

from ragmeshd.documents.checks import squash
from ragmeshd.documents.sections import SectionBuilder

_ADORNMENT = re.compile(r"^([=\-`:'\"~^_*+#<>.!$%&(),/;?@\[\\\]{|}])\1+[ \t]*$")
_DIRECTIVE = re.compile(r"^\.\.[ \t]+([\w:-]+)::(.*)$")
# Directives whose body is text a reader sees; every other directive, comment and hyperlink
# target is dropped with its indented block.
_KEPT_DIRECTIVES = {
    "note",
    "warning",
    "tip",
    "important",
    "caution",
    "attention",
    "hint",
    "danger",
    "error",
    "admonition",
    "seealso",
    "code",
    "code-block",
    "sourcecode",
    "topic",
    "sidebar",
    "rubric",
}
_ROLE = re.compile(r":[\w:+-]+:`([^`<]*?)(?:\s*<[^>]*>)?`")
_REFERENCE = re.compile(r"`([^`<]+?)(?:\s*<[^>]*>)?`__?")
_LITERAL = re.compile(r"``(.+?)``")


def inline_rst(text: str) -> str:
    """Roles, references and inline literals as their text."""
    return _LITERAL.sub(r"\1", _REFERENCE.sub(r"\1", _ROLE.sub(r"\1", text)))


def _is_underline(line: str, title: str) -> bool:
    return bool(_ADORNMENT.match(line)) and len(line.rstrip()) >= len(title.strip())


def extract_rst(text: str, fallback_title: str) -> tuple[str, SectionBuilder]:
    """Section titles (underlined, or over- and underlined, levels in order of first use of
    each style), paragraphs on blank lines, the bodies of admonitions and code directives;
    other directives, comments and targets dropped."""
    reader = _Reader(text.split("\n"))
    index = 0
    while index < len(reader.lines):
        index = reader.step(index)
    reader.flush()
    return fallback_title, reader.builder


class _Reader:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.builder = SectionBuilder()
        self.styles: list[tuple[str, bool]] = []
        self.paragraph: list[str] = []
        # Inside a dropped directive: lines indented deeper than this are skipped.
        self.skip_indent: int | None = None

    def flush(self) -> None:
        if self.paragraph:
            self.builder.paragraph(inline_rst(squash(" ".join(self.paragraph))))
            self.paragraph.clear()

    def heading(self, char: str, overline: bool, title: str) -> None:
        if (char, overline) not in self.styles:
            self.styles.append((char, overline))
        self.builder.heading(self.styles.index((char, overline)) + 1, inline_rst(title))

    def step(self, index: int) -> int:
        """Read the line at `index`; the index of the next line to read."""
        lines, line = self.lines, self.lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        stripped = line.strip()
        if self.skip_indent is not None:
            if not stripped or len(line) - len(line.lstrip()) > self.skip_indent:
                return index + 1
            self.skip_indent = None
        if not stripped:
            self.flush()
            return index + 1
        adornment = bool(_ADORNMENT.match(line))
        if (
            adornment
            and index + 2 < len(lines)
            and following.strip()
            and lines[index + 2].rstrip() == line.rstrip()
        ):  # an over- and underlined title
            self.flush()
            self.heading(stripped[0], True, following)
            return index + 3
        if not self.paragraph and following and _is_underline(following, line) and not adornment:
            self.heading(following.strip()[0], False, line)
            return index + 2
        if stripped.startswith(".."):
            self.flush()
            self.directive(line, stripped)
            return index + 1
        if not (adornment and len(stripped) >= 4 and not self.paragraph):  # not a transition
            self.paragraph.append(line)
        return index + 1

    def directive(self, line: str, stripped: str) -> None:
        found = _DIRECTIVE.match(stripped)
        if found and found.group(1).lower() in _KEPT_DIRECTIVES:
            argument = found.group(2).strip()
            if argument and found.group(1).lower() in {"admonition", "topic", "rubric"}:
                self.builder.paragraph(inline_rst(argument))
        else:
            self.skip_indent = len(line) - len(line.lstrip())
