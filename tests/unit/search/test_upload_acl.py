"""UploadFiles' `acl` (issue 24): the groups of each file reach its document's metadata,
checked as UpsertDocuments checks them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.api.httpbody_pb2 import HttpBody

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.search.fields import InvalidRequestError
from ragmeshd.search.uploads import extract_uploads, receive_files
from ragmeshd.settings import SearchSettings


async def _stream(*messages: pb.UploadFilesRequest) -> AsyncIterator[pb.UploadFilesRequest]:
    for message in messages:
        yield message


def _file(name: str, text: str, acl: str = "") -> pb.UploadFilesRequest:
    return pb.UploadFilesRequest(
        collection="notes", file_name=name, chunk=HttpBody(data=text.encode()), acl=acl
    )


async def test_each_files_acl_is_stored_with_its_document() -> None:
    s = SearchSettings()
    _, files = await receive_files(
        _stream(_file("a.md", "# A\n\nfinance text", " board , finance"), _file("b.md", "open")),
        s,
    )
    inputs = extract_uploads(files, s, lambda text: len(text.split()))
    assert [i.metadata.get("acl") for i in inputs] == ["board,finance", None]


async def test_a_bad_acl_is_invalid_argument_naming_the_file() -> None:
    with pytest.raises(InvalidRequestError, match=r"'a\.md'"):
        await receive_files(_stream(_file("a.md", "text", "no spaces allowed")), SearchSettings())
