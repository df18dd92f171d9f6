"""Plain text and Markdown."""

from __future__ import annotations

import re

from ragmeshd.documents.checks import paragraphs, squash
from ragmeshd.documents.sections import SectionBuilder


def extract_plain(text: str, fallback_title: str) -> tuple[str, SectionBuilder]:
    """Plain text: paragraphs on blank lines, no headings; the title is the file's name."""
    builder = SectionBuilder()
    for paragraph in paragraphs(text):
        builder.paragraph(paragraph)
    return fallback_title, builder


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S+")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\[[^\]]*\])")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def inline_markdown(text: str) -> str:
    """Links and images as their text."""
    return _LINK.sub(r"\1", _IMAGE.sub(r"\1", text))


def extract_markdown(text: str, fallback_title: str) -> tuple[str, SectionBuilder]:
    """CommonMark's block structure as far as sections need it: ATX and setext headings,
    fenced code kept verbatim as one paragraph, paragraphs on blank lines, links and images
    reduced to their text, comments, link definitions and YAML front matter dropped (its
    `title:` is the title when the text has no single top heading)."""
    front = _FRONT_MATTER.match(text)
    if front:
        found = _FRONT_TITLE.search(front.group(1))
        if found:
            fallback_title = found.group(1).strip("'\"") or fallback_title
        text = text[front.end() :]
    text = _COMMENT.sub("", text)
    builder = SectionBuilder()
    lines: list[str] = []
    fence: str | None = None
    code: list[str] = []

    def flush() -> None:
        if lines:
            builder.paragraph(inline_markdown(squash(" ".join(lines))))
            lines.clear()

    for line in text.split("\n"):
        if fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                builder.paragraph("\n".join(code))
                fence, code = None, []
            else:
                code.append(line)
            continue
        opening = _FENCE.match(line)
        if opening:
            flush()
            fence = opening.group(1)
            continue
        if not line.strip():
            flush()
            continue
        atx = _ATX.match(line)
        if atx:
            flush()
            builder.heading(len(atx.group(1)), inline_markdown(atx.group(2) or ""))
            continue
        setext = _SETEXT.match(line)
        if setext and lines:
            level = 1 if setext.group(1).startswith("=") else 2
            builder.heading(level, inline_markdown(" ".join(lines)))
            lines.clear()
            continue
        if not lines and _LINK_DEFINITION.match(line):
            continue
        lines.append(line)
    flush()
    if code:  # an unclosed fence runs to the end
        builder.paragraph("\n".join(code))
    return fallback_title, builder
