"""Documents with sources and passages (issue 21), on every backend: the client's passages
with section and page, the document's source, title, content hash and modification time,
all filterable and returned with hits; ListDocuments paged by source prefix; delete by
source prefix."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ragmesh.search.v1 import search_service_pb2 as pb
from tests.helpers import ServerProcess, expect_error
from tests.integration.search.test_search_contract import (
    count,
    n,
    new_collection,
    s,
    stub,
)

pytestmark = pytest.mark.integration


def document(identifier: str, source: str, passages: list[tuple[str, str, int]]) -> pb.Document:
    return pb.Document(
        id=identifier,
        source=source,
        title=f"Title of {identifier}",
        content_hash="ab" * 32,
        modify_time=Timestamp(seconds=1_700_000_000, nanos=500_000_000),
        passages=[pb.PassageInput(text=t, section=sec, page=page) for t, sec, page in passages],
    )


async def test_passages_carry_section_and_page_and_filter_on_them(
    search_server: ServerProcess,
) -> None:
    client = stub(search_server)
    name = await new_collection(client)
    await client.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            collection=name,
            documents=[
                document(
                    "manual-1/guide.pdf",
                    "manual-1/guide.pdf",
                    [
                        ("Glaciers hide crevasses under snow bridges.", "Hazards", 1),
                        ("Probe every snow bridge before crossing it.", "Hazards > Bridges", 2),
                        ("Pack a shovel, a probe and a beacon.", "Gear", 3),
                    ],
                ),
                document("manual-1/notes.md", "manual-1/notes.md", [("Buy snacks.", "", 0)]),
            ],
        )
    )
    stored = await client.GetDocument(
        pb.GetDocumentRequest(collection=name, id="manual-1/guide.pdf")
    )
    assert stored.passage_count == 3
    assert stored.document.text.startswith("Glaciers hide crevasses")
    assert "section" not in stored.document.metadata  # the document's, not a passage's
    assert stored.document.metadata["source"] == s("manual-1/guide.pdf")
    response = await client.Search(
        pb.SearchRequest(collection=name, query="probe a snow bridge", top_k=5)
    )
    hit = response.hits[0]
    assert hit.document_id == "manual-1/guide.pdf"
    assert (hit.source, hit.title) == ("manual-1/guide.pdf", "Title of manual-1/guide.pdf")
    assert (hit.section, hit.page) == ("Hazards > Bridges", 2)
    assert hit.metadata["page"] == n(2)
    on_page_3 = await client.Search(
        pb.SearchRequest(
            collection=name,
            query="snow bridge",
            filter=pb.MetadataFilter(conditions=[pb.FieldCondition(key="page", equals=n(3))]),
        )
    )
    assert [(h.page, h.section) for h in on_page_3.hits] == [(3, "Gear")]
    in_gear = await client.Search(
        pb.SearchRequest(
            collection=name,
            query="shovel",
            mode=pb.SEARCH_MODE_KEYWORD,
            filter=pb.MetadataFilter(
                conditions=[pb.FieldCondition(key="section", equals=s("Gear"))]
            ),
        )
    )
    assert [h.passage_text for h in in_gear.hits] == ["Pack a shovel, a probe and a beacon."]


async def test_list_documents_pages_by_source_prefix_and_delete_by_prefix(
    search_server: ServerProcess,
) -> None:
    client = stub(search_server)
    name = await new_collection(client)
    documents = [
        document(f"{root}/{number:02d}.md", f"{root}/{number:02d}.md", [(f"text {number}", "", 0)])
        for root in ("alpha-1", "beta-2")
        for number in range(7)
    ]
    await client.UpsertDocuments(pb.UpsertDocumentsRequest(collection=name, documents=documents))
    seen: list[pb.DocumentSummary] = []
    token = ""
    pages = 0
    while True:
        page = await client.ListDocuments(
            pb.ListDocumentsRequest(
                collection=name, source_prefix="alpha-1/", page_size=3, page_token=token
            )
        )
        pages += 1
        assert len(page.documents) <= 3
        seen.extend(page.documents)
        token = page.next_page_token
        if not token:
            break
    assert pages >= 3
    assert sorted(d.id for d in seen) == [f"alpha-1/{n:02d}.md" for n in range(7)]
    first = seen[0]
    assert first.content_hash == "ab" * 32
    assert first.title.startswith("Title of alpha-1/")
    assert first.passage_count == 1
    assert first.modify_time.seconds == 1_700_000_000
    assert abs(first.modify_time.nanos - 500_000_000) < 1000
    everything = await client.ListDocuments(
        pb.ListDocumentsRequest(collection=name, page_size=1000)
    )
    assert len(everything.documents) == 14 and not everything.next_page_token
    deleted = await client.DeleteDocuments(
        pb.DeleteDocumentsRequest(collection=name, source_prefix="alpha-1/")
    )
    assert deleted.deleted_count == 7
    left = await client.ListDocuments(pb.ListDocumentsRequest(collection=name))
    assert sorted(d.source for d in left.documents) == [f"beta-2/{n:02d}.md" for n in range(7)]


async def test_bad_documents_and_page_tokens_are_invalid_argument(
    search_server: ServerProcess,
) -> None:
    client = stub(search_server)
    name = await new_collection(client)
    both = document("x", "x", [("a", "", 0)])
    both.text = "also text"
    await expect_error(
        client.UpsertDocuments(pb.UpsertDocumentsRequest(collection=name, documents=[both])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "documents[0] has both text and passages",
    )
    empty = document("y", "y", [("  ", "", 0)])
    await expect_error(
        client.UpsertDocuments(pb.UpsertDocumentsRequest(collection=name, documents=[empty])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "documents[0].passages[0].text is empty",
    )
    await expect_error(
        client.ListDocuments(pb.ListDocumentsRequest(collection=name, page_token="!!not-ours")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )
    await expect_error(
        client.ListDocuments(pb.ListDocumentsRequest(collection=name, page_size=5000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size",
    )
    await expect_error(
        client.DeleteDocuments(
            pb.DeleteDocumentsRequest(collection=name, ids=["a"], source_prefix="b")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not both",
    )
    await expect_error(
        client.ListDocuments(pb.ListDocumentsRequest(collection="missing-collection")),
        grpc.StatusCode.NOT_FOUND,
    )


def upload_messages(collection: str, files: list[tuple[str, bytes, str]], chunk: int = 1000):
    """UploadFilesRequest messages: each file in pieces of `chunk` bytes."""
    from google.api.httpbody_pb2 import HttpBody

    first = True
    for name, data, content_type in files:
        for start in range(0, max(len(data), 1), chunk):
            yield pb.UploadFilesRequest(
                collection=collection if first else "",
                file_name=name if start == 0 else "",
                chunk=HttpBody(
                    content_type=content_type if start == 0 else "",
                    data=data[start : start + chunk],
                ),
            )
            first = False


async def test_upload_files_extracts_on_the_server(search_server: ServerProcess, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.documents.conftest import write_pdf

    client = stub(search_server)
    name = await new_collection(client)
    pdf = write_pdf(
        tmp_path / "report.pdf",
        ["Crampons grip hard ice.", "Ice axes stop a slide."],
        headings=["Ice", "Self arrest"],
    ).read_bytes()
    markdown = b"# Hut guide\n\n## Booking\n\nBook the hut two weeks ahead.\n"
    response = await client.UploadFiles(
        upload_messages(
            name,
            [("trip/report.pdf", pdf, "application/pdf"), ("hut", markdown, "text/markdown")],
        )
    )
    assert [(f.id, f.title, f.passage_count) for f in response.files] == [
        ("trip/report.pdf", "report", 2),
        ("hut", "Hut guide", 1),
    ]
    assert len(response.files[0].content_hash) == 64 and response.passage_count == 3
    hit = (
        await client.Search(pb.SearchRequest(collection=name, query="stop a slide with an axe"))
    ).hits[0]
    assert (hit.document_id, hit.source, hit.page, hit.section) == (
        "trip/report.pdf",
        "trip/report.pdf",
        2,
        "Self arrest",
    )
    listed = await client.ListDocuments(pb.ListDocumentsRequest(collection=name))
    assert sorted(d.source for d in listed.documents) == ["hut", "trip/report.pdf"]


async def test_a_bad_upload_is_invalid_argument_naming_the_file_and_stores_nothing(
    search_server: ServerProcess,
) -> None:
    client = stub(search_server)
    name = await new_collection(client)
    good = ("good.md", b"# Fine\n\ntext", "")
    await expect_error(
        client.UploadFiles(upload_messages(name, [good, ("photo.png", b"\x89PNG\r\n", "")])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "file 'photo.png' cannot be stored: unsupported format",
    )
    await expect_error(
        client.UploadFiles(upload_messages(name, [good, ("scan.pdf", b"%PDF-1.4\n garbage", "")])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "file 'scan.pdf' cannot be stored: unreadable",
    )
    await expect_error(
        client.UploadFiles(upload_messages(name, [("blank.txt", b"   \n", "text/plain")])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "file 'blank.txt' cannot be stored: empty",
    )
    assert (await client.ListDocuments(pb.ListDocumentsRequest(collection=name))).documents == []
    await expect_error(
        client.UploadFiles(upload_messages("no-such-collection", [good])),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_concurrent_writers_offering_more_than_the_model_embeds_lose_nothing(
    search_pgvector: ServerProcess,
) -> None:
    """Eight writers at once offer ~270 passages, seconds of queue against interactive calls'
    limit (embeddings.max_queue_wait_ms 500 ms, the default): the bulk lane makes every
    write wait for the model instead of being refused, and every passage is stored."""
    import asyncio
    import random

    client = stub(search_pgvector)
    name = await new_collection(client)
    rng = random.Random(5)
    words = "glacier rope crevasse probe beacon shovel avalanche snow bridge anchor".split()

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(300))

    writers, calls, per_call = 8, 2, 8
    requests = [
        [
            pb.UpsertDocumentsRequest(
                collection=name,
                documents=[pb.Document(id=f"w{w}-c{c}-d{d}", text=text()) for d in range(per_call)],
            )
            for c in range(calls)
        ]
        for w in range(writers)
    ]

    async def writer(mine: list[pb.UpsertDocumentsRequest]) -> int:
        stored = 0
        for request in mine:
            response = await client.UpsertDocuments(request, timeout=600)
            stored += response.passage_count
        return stored

    stored = await asyncio.gather(*(writer(mine) for mine in requests))
    assert await count(client, name) == writers * calls * per_call
    collection = await client.GetCollection(pb.GetCollectionRequest(name=name))
    assert collection.collection.passage_count == sum(stored) > writers * calls * per_call
