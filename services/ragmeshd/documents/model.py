"""The records of document extraction, independent of formats, protobuf and services."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Headings of a section path are joined with this in `Passage.section`.
SECTION_SEPARATOR = " > "


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path (and, in a PDF, on one page).

    `text` holds paragraphs separated by one blank line ("\\n\\n"); a paragraph holds no blank
    line. `headings` runs from the outermost heading to the innermost; empty before the first
    heading."""

    headings: tuple[str, ...]
    text: str
    page: int | None = None  # 1-based, PDFs only


@dataclass(frozen=True)
class ExtractedDocument:
    """The readable content of one file."""

    title: str
    format: str  # "txt", "md", "rst", "html", "pdf", "docx"
    sections: tuple[Section, ...]
    page_count: int | None = None  # PDFs only

    @property
    def char_count(self) -> int:
        return sum(len(section.text) for section in self.sections)


@dataclass(frozen=True)
class Passage:
    """One piece of a document to embed, with where it comes from."""

    index: int
    text: str
    title: str
    section: str  # the heading path joined with SECTION_SEPARATOR; "" before any heading
    page: int | None
    token_count: int


class SkipReason(enum.Enum):
    """Why a file gives no passages; the value is what summaries print."""

    EMPTY = "empty"
    TOO_LARGE = "too large"
    BINARY = "binary"
    UNSUPPORTED = "unsupported format"
    ENCRYPTED = "encrypted"
    NO_TEXT_LAYER = "no text layer"
    UNREADABLE = "unreadable"
    # Sent, and refused by the mesh as invalid (INVALID_ARGUMENT with its reason).
    REFUSED = "refused by the mesh"


@dataclass(frozen=True)
class Skipped:
    """A file that was not extracted: the reason and a message a user can act on."""

    name: str
    reason: SkipReason
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason.value} ({self.detail})"


class DocumentError(Exception):
    """Raised inside an extractor; `extract` turns it into a Skipped."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
