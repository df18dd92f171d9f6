"""UploadFiles' parts (issue 21): reading the client stream into files within the call's
limits, and extracting them into documents with the same code as `ragmesh ingest`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.documents import PassageBudget, Skipped, content_hash, extract_bytes, split_document
from ragmeshd.documents.limits import Limits
from ragmeshd.runtime.tenancy import ACL_KEY
from ragmeshd.search import validation
from ragmeshd.search.fields import MAX_TEXT_FIELD_CHARS, InvalidRequestError, PassageText
from ragmeshd.search.records import (
    CONTENT_HASH_KEY,
    PAGE_KEY,
    SECTION_KEY,
    SOURCE_KEY,
    TITLE_KEY,
    PreparedDocument,
)
from ragmeshd.search.validation import DocumentInput
from ragmeshd.settings import SearchSettings


@dataclass
class UploadedBytes:
    name: str
    content_type: str
    data: bytearray = field(default_factory=bytearray)
    acl: str = ""  # the file's groups, checked (validation.check_acl); empty: none


async def receive_files(
    request_iterator: AsyncIterator[pb.UploadFilesRequest], s: SearchSettings
) -> tuple[str, list[UploadedBytes]]:
    """The collection and the files of an upload stream, within the call's limits."""
    collection = ""
    files: list[UploadedBytes] = []
    total = 0
    async for message in request_iterator:
        if message.collection:
            if collection and message.collection != collection:
                raise InvalidRequestError(
                    f"collection changes from {collection!r} to {message.collection!r}"
                    " within one upload"
                )
            collection = message.collection
        if message.file_name and (not files or message.file_name != files[-1].name):
            if len(files) == s.max_documents_per_upsert:
                raise InvalidRequestError(
                    f"the upload has more than {s.max_documents_per_upsert} files"
                )
            validation.check_document_id(
                message.file_name, f"file_name {message.file_name!r}", s.max_document_id_chars
            )
            if any(upload.name == message.file_name for upload in files):
                raise InvalidRequestError(
                    f"file_name {message.file_name!r} is sent twice in one upload"
                )
            acl = (
                validation.check_acl(message.acl, f"acl of file {message.file_name!r}")
                if message.acl
                else ""
            )
            files.append(UploadedBytes(message.file_name, message.chunk.content_type, acl=acl))
        elif not files:
            raise InvalidRequestError(
                "the first message with bytes has no file_name: name each file"
            )
        total += len(message.chunk.data)
        if total > s.upload_max_bytes:
            raise InvalidRequestError(
                f"the upload is over {s.upload_max_bytes / 2**20:.0f} MiB"
                f" (search.upload_max_bytes), at file {files[-1].name!r}"
            )
        files[-1].data += message.chunk.data
    if not files:
        raise InvalidRequestError("the upload has no file: send file_name and its bytes")
    return collection, files


def extract_uploads(
    files: list[UploadedBytes], s: SearchSettings, count_tokens: Callable[[str], int]
) -> list[DocumentInput]:
    """Each file as a document of passages; a file that cannot be read is an
    InvalidRequestError naming it and why (nothing of the call is stored)."""
    budget = PassageBudget(s.passage_max_tokens, s.passage_overlap_tokens, s.passage_max_chars)
    limits = Limits(max_bytes=s.upload_max_bytes)
    inputs = []
    for upload in files:
        data = bytes(upload.data)
        extracted = extract_bytes(upload.name, data, upload.content_type, limits)
        if isinstance(extracted, Skipped):
            raise InvalidRequestError(
                f"file {upload.name!r} cannot be stored: {extracted.reason.value}"
                f" ({extracted.detail})"
            )
        passages = [
            PassageText(
                passage.text,
                {
                    **({SECTION_KEY: passage.section} if passage.section else {}),
                    **({PAGE_KEY: float(passage.page)} if passage.page else {}),
                },
            )
            for passage in split_document(extracted, count_tokens, budget)
        ]
        if len(passages) > s.max_passages_per_document:
            raise InvalidRequestError(
                f"file {upload.name!r} gives {len(passages)} passages; the limit is"
                f" {s.max_passages_per_document}"
            )
        metadata = {
            SOURCE_KEY: upload.name,
            TITLE_KEY: extracted.title[:MAX_TEXT_FIELD_CHARS],
            CONTENT_HASH_KEY: content_hash(data),
            **({ACL_KEY: upload.acl} if upload.acl else {}),
        }
        text = "\n\n".join(passage.text for passage in passages)
        inputs.append(DocumentInput(upload.name, text, dict(metadata), None, passages))
    return inputs


def upload_response(documents: list[PreparedDocument]) -> pb.UploadFilesResponse:
    return pb.UploadFilesResponse(
        files=[
            pb.UploadedFile(
                id=document.id,
                title=str(document.metadata[TITLE_KEY]),
                passage_count=len(document.passages),
                content_hash=str(document.metadata[CONTENT_HASH_KEY]),
            )
            for document in documents
        ],
        passage_count=sum(len(document.passages) for document in documents),
    )
