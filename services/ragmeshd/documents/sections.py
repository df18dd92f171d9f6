"""Building sections from a stream of headings and paragraphs, which every extractor emits."""

from __future__ import annotations

import re

from ragmeshd.documents.model import Section

_BLANK_LINES = re.compile(r"\n\s*\n")


class SectionBuilder:
    """Collects headings (with their level) and paragraphs in document order into Sections.

    A heading closes the current section and replaces every open heading of its level or
    deeper. `build` makes a document's only top-level heading, when it comes first, the title
    (and leaves it out of section paths): "# Guide / ## Install" gives the title "Guide" and
    the section "Install"."""

    def __init__(self) -> None:
        self._open: list[tuple[int, str]] = []
        self._paragraphs: list[str] = []
        self._page: int | None = None
        self._sections: list[tuple[tuple[tuple[int, str], ...], str, int | None]] = []
        self._headings: list[tuple[int, str]] = []

    def heading(self, level: int, text: str) -> None:
        text = " ".join(text.split())
        if not text:
            return
        self._flush()
        while self._open and self._open[-1][0] >= level:
            self._open.pop()
        self._open.append((level, text))
        self._headings.append((level, text))

    def paragraph(self, text: str) -> None:
        """A paragraph; blank lines inside it (in code) are closed up so it stays one."""
        text = _BLANK_LINES.sub("\n", text.strip())
        if text:
            self._paragraphs.append(text)

    def page(self, number: int | None) -> None:
        """Paragraphs from here on are on page `number` (1-based)."""
        self._flush()
        self._page = number

    def set_headings(self, headings: tuple[tuple[int, str], ...]) -> None:
        """Replace the open headings (a PDF's outline entry for the page)."""
        self._flush()
        self._open = list(headings)

    def _flush(self) -> None:
        if self._paragraphs:
            path = tuple(self._open)
            self._sections.append((path, "\n\n".join(self._paragraphs), self._page))
            self._paragraphs = []

    def build(self, fallback_title: str) -> tuple[str, tuple[Section, ...]]:
        """The title and the sections."""
        self._flush()
        title_heading = _title_heading(self._headings)
        title = title_heading[1] if title_heading else fallback_title
        sections: list[Section] = []
        for path, text, page in self._sections:
            names = tuple(
                name
                for position, (level, name) in enumerate(path)
                if not (position == 0 and (level, name) == title_heading)
            )
            if sections and sections[-1].headings == names and sections[-1].page == page:
                # the text before the title heading and the text under it
                sections[-1] = Section(names, f"{sections[-1].text}\n\n{text}", page)
            else:
                sections.append(Section(names, text, page))
        return title, tuple(sections)


def _title_heading(headings: list[tuple[int, str]]) -> tuple[int, str] | None:
    """The first heading when it is the only one at the top level used."""
    if not headings:
        return None
    top = min(level for level, _ in headings)
    first = headings[0]
    if first[0] == top and sum(1 for level, _ in headings if level == top) == 1:
        return first
    return None
