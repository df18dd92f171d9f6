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
    builder = SectionBuilder()
    styles: list[tuple[str, bool]] = []
    lines = text.split("\n")
    paragraph: list[str] = []
    skip_indent: int | None = None

    def flush() -> None:
        if paragraph:
            builder.paragraph(inline_rst(squash(" ".join(paragraph))))
            paragraph.clear()

    def level(char: str, overline: bool) -> int:
        if (char, overline) not in styles:
            styles.append((char, overline))
        return styles.index((char, overline)) + 1

    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if skip_indent is not None:
            if not line.strip() or len(line) - len(line.lstrip()) > skip_indent:
                index += 1
                continue
            skip_indent = None
        stripped = line.strip()
        if not stripped:
            flush()
            index += 1
            continue
        # over- and underlined title
        if (
            _ADORNMENT.match(line)
            and index + 2 < len(lines)
            and lines[index + 1].strip()
            and lines[index + 2].rstrip() == line.rstrip()
        ):
            flush()
            builder.heading(level(line.strip()[0], True), inline_rst(lines[index + 1]))
            index += 3
            continue
        # underlined title: one line of text, then its adornment
        if (
            not paragraph
            and following
            and _is_underline(following, line)
            and not _ADORNMENT.match(line)
        ):
            builder.heading(level(following.strip()[0], False), inline_rst(line))
            index += 2
            continue
        if stripped.startswith(".."):
            flush()
            directive = _DIRECTIVE.match(stripped)
            indent = len(line) - len(line.lstrip())
            if directive and directive.group(1).lower() in _KEPT_DIRECTIVES:
                argument = directive.group(2).strip()
                if argument and directive.group(1).lower() in {"admonition", "topic", "rubric"}:
                    builder.paragraph(inline_rst(argument))
            else:
                skip_indent = indent
            index += 1
            continue
        if _ADORNMENT.match(line) and len(stripped) >= 4 and not paragraph:
            index += 1  # a transition
            continue
        paragraph.append(line)
        index += 1
    flush()
    return fallback_title, builder
