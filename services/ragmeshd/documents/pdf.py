"""PDF: the text layer page by page (pypdf), sections from the outline (bookmarks).

A PDF whose pages give no text (a scan without OCR) is skipped as "no text layer"; an
encrypted one that does not open with the empty user password as "encrypted"; one pypdf
cannot parse as "unreadable".
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import pypdf
from pypdf.errors import FileNotDecryptedError, PdfReadError

from ragmeshd.documents.checks import squash
from ragmeshd.documents.model import DocumentError, SkipReason
from ragmeshd.documents.sections import SectionBuilder

# pypdf logs every recoverable defect of a file it reads as a warning; a folder of real PDFs
# would fill the terminal. A file it cannot read raises, and becomes a skip reason.
logging.getLogger("pypdf").setLevel(logging.ERROR)

_HYPHENATED = re.compile(r"(\w)-\n(\w)")
_BLANK_LINES = re.compile(r"\n\s*\n")


def _page_paragraphs(text: str) -> list[str]:
    """A page's paragraphs: split on blank lines, lines joined, words hyphenated across a line
    break joined."""
    text = _HYPHENATED.sub(r"\1\2", text)
    return [squash(block) for block in _BLANK_LINES.split(text) if block.strip()]


def _outline(reader: pypdf.PdfReader) -> list[tuple[int, tuple[tuple[int, str], ...]]]:
    """The outline as (0-based page, heading path) in page order; empty if it has none or it
    cannot be read."""
    entries: list[tuple[int, tuple[tuple[int, str], ...]]] = []

    def visit(items: list[Any], path: tuple[tuple[int, str], ...]) -> None:
        last: tuple[tuple[int, str], ...] = path
        for item in items:
            if isinstance(item, list):
                visit(item, last)
                continue
            title = squash(str(getattr(item, "title", "") or ""))
            page = reader.get_destination_page_number(item)
            if not title or page is None or page < 0:
                continue
            last = (*path, (len(path) + 1, title))
            entries.append((page, last))

    try:
        visit(reader.outline, ())
    except Exception:  # a broken outline leaves the text readable
        return []
    entries.sort(key=lambda entry: entry[0])
    return entries


def extract_pdf(data: bytes, fallback_title: str) -> tuple[str, SectionBuilder, int]:
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception as error:
                raise DocumentError(SkipReason.ENCRYPTED, "needs a password") from error
            if not opened:
                raise DocumentError(SkipReason.ENCRYPTED, "needs a password")
        pages = reader.pages
        page_count = len(pages)
        outline = _outline(reader)
        builder = SectionBuilder()
        any_text = False
        next_entry = 0
        for number, page in enumerate(pages):
            headings = None
            while next_entry < len(outline) and outline[next_entry][0] <= number:
                headings = outline[next_entry][1]
                next_entry += 1
            if headings is not None:
                builder.set_headings(headings)
            builder.page(number + 1)
            for paragraph in _page_paragraphs(page.extract_text() or ""):
                any_text = True
                builder.paragraph(paragraph)
        metadata_title = ""
        try:
            metadata = reader.metadata
            metadata_title = squash(str(metadata.title or "")) if metadata else ""
        except Exception:
            metadata_title = ""
    except DocumentError:
        raise
    except FileNotDecryptedError as error:
        raise DocumentError(SkipReason.ENCRYPTED, "needs a password") from error
    except (PdfReadError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise DocumentError(SkipReason.UNREADABLE, f"not a readable PDF: {error}") from error
    if page_count == 0:
        raise DocumentError(SkipReason.EMPTY, "the PDF has no pages")
    if not any_text:
        raise DocumentError(
            SkipReason.NO_TEXT_LAYER,
            f"none of its {page_count} pages has text (a scan needs OCR first)",
        )
    return metadata_title or fallback_title, builder, page_count
