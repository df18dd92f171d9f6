"""Checks every format shares: the content hash, binary detection and text decoding."""

from __future__ import annotations

import codecs
import hashlib
import re

from ragmeshd.documents.model import DocumentError, SkipReason

# How much of a file the binary check looks at.
_SNIFF_BYTES = 8192
# Bytes that start binary formats people keep beside their documents (images, archives,
# executables, office files); a text file never starts with them.
_BINARY_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",  # JPEG
    b"GIF8",
    b"PK\x03\x04",  # zip (docx, xlsx, jar ...)
    b"\x1f\x8b",  # gzip
    b"\x7fELF",
    b"%PDF-",
    b"\xd0\xcf\x11\xe0",  # OLE (doc, xls, encrypted office files)
    b"BZh",
    b"\xfd7zXZ",
    b"7z\xbc\xaf",
)
# Control characters other than tab, newline, form feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# More than this share of control characters in decoded text means it is not text.
_MAX_CONTROL_SHARE = 0.01


def content_hash(data: bytes) -> str:
    """The hex SHA-256 of a file's bytes: what sync compares with the mesh's copy."""
    return hashlib.sha256(data).hexdigest()


def decode_text(data: bytes) -> str:
    """The text of a file that should be text: UTF-8 (with or without a byte-order mark),
    UTF-16 with a byte-order mark, else Windows-1252. Raises DocumentError(BINARY) for bytes
    that are not text in any of them."""
    head = data[:_SNIFF_BYTES]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise DocumentError(SkipReason.BINARY, "not valid UTF-16 text") from error
    else:
        if head.startswith(_BINARY_MAGIC) or b"\x00" in head:
            raise DocumentError(SkipReason.BINARY, "binary content, not text")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")
    sample = text[:_SNIFF_BYTES]
    if sample and len(_CONTROL.findall(sample)) > _MAX_CONTROL_SHARE * len(sample):
        raise DocumentError(SkipReason.BINARY, "binary content, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n")


def squash(text: str) -> str:
    """`text` with each run of whitespace made one space, trimmed."""
    return " ".join(text.split())


def paragraphs(text: str) -> list[str]:
    """The paragraphs of plain text: split on blank lines, lines within one joined by spaces."""
    return [squash(block) for block in _BLANK_LINES.split(text) if block.strip()]
