"""One entry point for every format: bytes (or a file) in, an ExtractedDocument or a Skipped
out. Whatever goes wrong with one file (a parser's exception included) becomes a Skipped with
a reason, so one bad file never stops a folder's run or fails an upload with INTERNAL."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from ragmeshd.documents.checks import decode_text
from ragmeshd.documents.limits import Limits
from ragmeshd.documents.model import DocumentError, ExtractedDocument, Skipped, SkipReason
from ragmeshd.documents.sections import SectionBuilder

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}
CONTENT_TYPES: dict[str, str] = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/x-rst": "rst",
    "text/prs.fallenstein.rst": "rst",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}


def format_of(name: str, content_type: str | None = None, head: bytes = b"") -> str | None:
    """The format of a file: by its name's suffix, else by its content type, else a PDF by its
    first bytes; None if unsupported."""
    found = SUPPORTED_SUFFIXES.get(PurePosixPath(name).suffix.lower())
    if found:
        return found
    if content_type:
        found = CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
        if found:
            return found
    if head.startswith(b"%PDF-"):
        return "pdf"
    return None


def _title_from(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).stem or name


def extract_bytes(
    name: str, data: bytes, content_type: str | None = None, limits: Limits | None = None
) -> ExtractedDocument | Skipped:
    """The content of a file called `name` (its path or upload name, for the format and the
    fallback title) holding `data`."""
    limits = limits or Limits()
    try:
        return _extract(name, data, content_type, limits)
    except DocumentError as error:
        return Skipped(name, error.reason, error.detail)
    except RecursionError:
        return Skipped(name, SkipReason.UNREADABLE, "nested too deeply to read")
    except Exception as error:  # a parser's own bug must not stop the run
        logger.warning("extracting %s failed", name, exc_info=True)
        return Skipped(name, SkipReason.UNREADABLE, f"{type(error).__name__}: {error}")


def _extract(name: str, data: bytes, content_type: str | None, limits: Limits) -> ExtractedDocument:
    if len(data) > limits.max_bytes:
        raise DocumentError(SkipReason.TOO_LARGE, _too_large(len(data), limits.max_bytes))
    kind = format_of(name, content_type, data[:8])
    if kind is None:
        suffix = PurePosixPath(name).suffix or "no suffix"
        raise DocumentError(
            SkipReason.UNSUPPORTED, f"{suffix}: txt, md, rst, html, pdf and docx are read"
        )
    if not data.strip():
        raise DocumentError(SkipReason.EMPTY, "the file has no content")
    fallback = _title_from(name)
    page_count = None
    builder: SectionBuilder
    if kind == "pdf":
        from ragmeshd.documents.pdf import extract_pdf

        title, builder, page_count = extract_pdf(data, fallback)
    elif kind == "docx":
        from ragmeshd.documents.docx import extract_docx

        title, builder = extract_docx(data, fallback)
    else:
        text = decode_text(data)
        if len(text) > limits.max_text_chars:
            raise DocumentError(
                SkipReason.TOO_LARGE,
                f"{len(text):,} characters of text; the limit is {limits.max_text_chars:,}",
            )
        if kind == "html":
            from ragmeshd.documents.html import extract_html

            title, builder = extract_html(text, fallback)
        elif kind == "md":
            from ragmeshd.documents.text import extract_markdown

            title, builder = extract_markdown(text, fallback)
        elif kind == "rst":
            from ragmeshd.documents.rst import extract_rst

            title, builder = extract_rst(text, fallback)
        else:
            from ragmeshd.documents.text import extract_plain

            title, builder = extract_plain(text, fallback)
    # A document's single top heading names it better than its file or page title.
    title, sections = builder.build(title)
    document = ExtractedDocument(title, kind, sections, page_count)
    if document.char_count == 0:
        raise DocumentError(SkipReason.EMPTY, "no text in the file")
    if document.char_count > limits.max_text_chars:
        raise DocumentError(
            SkipReason.TOO_LARGE,
            f"{document.char_count:,} characters of text; the limit is {limits.max_text_chars:,}",
        )
    return document


def _too_large(size: int, limit: int) -> str:
    return f"{size / 2**20:.1f} MiB; the limit is {limit / 2**20:.0f} MiB"


def read_file(path: Path, limits: Limits | None = None) -> bytes | Skipped:
    """The bytes of a file, or a Skipped if it is too large or cannot be read."""
    limits = limits or Limits()
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            return Skipped(str(path), SkipReason.TOO_LARGE, _too_large(size, limits.max_bytes))
        with path.open("rb") as file:
            data = file.read(limits.max_bytes + 1)
    except OSError as error:
        return Skipped(str(path), SkipReason.UNREADABLE, error.strerror or str(error))
    if len(data) > limits.max_bytes:  # grew since stat
        return Skipped(str(path), SkipReason.TOO_LARGE, _too_large(len(data), limits.max_bytes))
    return data


def extract_file(path: Path, limits: Limits | None = None) -> ExtractedDocument | Skipped:
    data = read_file(path, limits)
    if isinstance(data, Skipped):
        return data
    return extract_bytes(str(path), data, None, limits)
