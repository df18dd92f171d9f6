"""Checks of the fields documents bring from files (issue 21): source, title, content hash,
modification time, the client's passages with section and page; ListDocuments' paging. Each
failure is an InvalidRequestError (defined here, re-exported by ragmeshd.search.validation)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd import defaults
from ragmeshd.search.records import (
    CONTENT_HASH_KEY,
    MTIME_KEY,
    PAGE_KEY,
    SECTION_KEY,
    SOURCE_KEY,
    TITLE_KEY,
    Metadata,
)
from ragmeshd.settings import SearchSettings


class InvalidRequestError(ValueError):
    """The request breaks a documented limit; the message says which and how."""


@dataclass(frozen=True)
class PassageText:
    """A passage the client cut, with its own metadata (section, page)."""

    text: str
    metadata: Metadata


@dataclass(frozen=True)
class ListInput:
    """A validated ListDocuments request."""

    source_prefix: str
    page_size: int
    page_token: str


MAX_TEXT_FIELD_CHARS = defaults.MAX_SOURCE_CHARS


def check_text_field(value: str, field: str) -> str:
    if len(value) > defaults.MAX_SOURCE_CHARS:
        raise InvalidRequestError(
            f"{field} has {len(value)} characters; the limit is {defaults.MAX_SOURCE_CHARS}"
        )
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise InvalidRequestError(f"{field} contains a control character")
    return value


def document_fields(document: pb.Document, field: str) -> Metadata:
    """The metadata keys a document's own fields set (they replace the client's keys)."""
    found: Metadata = {}
    if document.source:
        found[SOURCE_KEY] = check_text_field(document.source, f"{field}.source")
    if document.title:
        found[TITLE_KEY] = check_text_field(document.title, f"{field}.title")
    if document.content_hash:
        found[CONTENT_HASH_KEY] = check_text_field(document.content_hash, f"{field}.content_hash")
    if document.HasField("modify_time"):
        stamp = document.modify_time
        found[MTIME_KEY] = float(stamp.seconds) + stamp.nanos / 1e9
    return found


def check_passages(
    document: pb.Document, field: str, settings: SearchSettings
) -> list[PassageText]:
    if document.text:
        raise InvalidRequestError(
            f"{field} has both text and passages: send one (with passages, the text stored is"
            " the passages joined)"
        )
    if document.vector:
        raise InvalidRequestError(f"{field} has both a vector and passages: send one")
    limit = settings.max_passages_per_document
    if len(document.passages) > limit:
        raise InvalidRequestError(
            f"{field}.passages has {len(document.passages)} passages; the limit is {limit}"
        )
    checked = []
    for number, passage in enumerate(document.passages):
        where = f"{field}.passages[{number}]"
        if not passage.text.strip():
            raise InvalidRequestError(f"{where}.text is empty or only whitespace")
        if len(passage.text) > settings.passage_max_chars:
            raise InvalidRequestError(
                f"{where}.text has {len(passage.text)} characters; the limit is"
                f" {settings.passage_max_chars} (search.passage_max_chars)"
            )
        if passage.page < 0:
            raise InvalidRequestError(f"{where}.page is {passage.page}; pages count from 1")
        metadata: Metadata = {}
        if passage.section:
            metadata[SECTION_KEY] = check_text_field(passage.section, f"{where}.section")
        if passage.page:
            metadata[PAGE_KEY] = float(passage.page)
        checked.append(PassageText(passage.text, metadata))
    return checked


def check_list(request: pb.ListDocumentsRequest) -> ListInput:
    size = request.page_size or defaults.DEFAULT_LIST_PAGE_SIZE
    if not 1 <= size <= defaults.MAX_LIST_PAGE_SIZE:
        raise InvalidRequestError(
            f"page_size is {request.page_size}; it must be 1 to {defaults.MAX_LIST_PAGE_SIZE}"
            f" (0 means {defaults.DEFAULT_LIST_PAGE_SIZE})"
        )
    prefix = check_text_field(request.source_prefix, "source_prefix")
    return ListInput(prefix, size, request.page_token)


def check_source_prefix(prefix: str) -> str:
    if not prefix:
        raise InvalidRequestError("source_prefix is empty: give ids or a source prefix")
    return check_text_field(prefix, "source_prefix")
