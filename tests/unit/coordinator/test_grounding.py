"""Grounded answers: citations of no passage leave the streamed answer, every passage becomes
a numbered source with its document's metadata, and the LOCAL-only route below the confidence
threshold says the documents do not contain the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmeshd.coordinator.answering import AnswerOutcome, ChunkEvent
from ragmeshd.coordinator.budget import Passage
from ragmeshd.coordinator.grounding import Grounding, not_in_documents, says_not_in_documents
from ragmeshd.coordinator.routing import Route, Side
from ragmeshd.coordinator.sources import answer_sources, metadata_pairs


async def _events(*events: ChunkEvent) -> AsyncIterator[ChunkEvent]:
    for event in events:
        yield event


async def _collect(grounding: Grounding, *events: ChunkEvent) -> list[ChunkEvent]:
    return [event async for event in grounding.filter(_events(*events))]


async def test_invalid_citations_are_removed_as_the_answer_streams() -> None:
    grounding = Grounding(2)
    out = await _collect(
        grounding,
        ChunkEvent("Paris [1] is big [", Side.LOCAL),
        ChunkEvent("7] and old [2", Side.LOCAL),
        ChunkEvent("].", Side.LOCAL),
    )
    assert "".join(e.text for e in out) == "Paris [1] is big  and old [2]."
    assert grounding.answer == "Paris [1] is big  and old [2]."
    assert grounding.cited == [1, 2]
    assert grounding.removed == 1
    assert {e.source for e in out} == {Side.LOCAL}


async def test_a_backend_that_starts_over_starts_a_new_answer() -> None:
    grounding = Grounding(1)
    await _collect(
        grounding,
        ChunkEvent("half [1] of", Side.LOCAL),
        ChunkEvent("Whole [1].", Side.REMOTE, discard_previous=True),
    )
    assert grounding.answer == "Whole [1]."


async def test_the_context_only_answer_passes_unchanged() -> None:
    grounding = Grounding(1)
    text = "Note: no model answered. <<<passage 1 (x)>>> [9] <<<end passage 1>>>"
    out = await _collect(grounding, ChunkEvent(text, Side.NONE))
    assert [e.text for e in out] == [text]


def test_sources_carry_metadata_numbers_and_citations() -> None:
    metadata = {
        "source": search_pb.MetadataValue(string_value="notes/a.pdf"),
        "title": search_pb.MetadataValue(string_value="A"),
        "section": search_pb.MetadataValue(string_value="Intro > Why"),
        "page": search_pb.MetadataValue(number_value=3),
    }
    passages = [
        Passage("notes", "a", "text a", 0, 0.9, metadata=metadata_pairs(metadata)),
        Passage("notes", "b", "text b", 2, 0.5),
    ]
    sources = answer_sources(passages, cited=[2], removed=1).sources
    assert [s.number for s in sources] == [1, 2]
    first, second = sources
    assert (first.source, first.title, first.section, first.page) == (
        "notes/a.pdf", "A", "Intro > Why", 3,
    )  # fmt: skip
    assert not first.cited and second.cited
    assert second.source == "b" and second.page == 0 and second.text == "text b"


def test_a_hits_fields_win_over_its_metadata() -> None:
    from ragmeshd.coordinator.sources import hit_metadata

    hit = search_pb.SearchHit(
        document_id="d",
        source="docs/x.md",
        section="S",
        page=2,
        metadata={"title": search_pb.MetadataValue(string_value="T")},
    )
    assert dict(hit_metadata(hit)) == {
        "source": "docs/x.md",
        "section": "S",
        "page": 2.0,
        "title": "T",
    }


def test_not_in_documents_only_for_the_local_only_route_below_the_threshold() -> None:
    local_only = Route(Side.LOCAL, "only local")
    assert says_not_in_documents(local_only, None, 0.3, 0.7)
    assert not says_not_in_documents(local_only, None, 0.8, 0.7)
    assert not says_not_in_documents(local_only, Side.LOCAL, 0.3, 0.7)
    assert not says_not_in_documents(Route(Side.LOCAL, "x", Side.REMOTE), None, 0.3, 0.7)
    assert not says_not_in_documents(Route(Side.REMOTE, "x"), None, 0.3, 0.7)


async def test_not_in_documents_answer_is_recorded_as_none() -> None:
    outcome = AnswerOutcome()
    events = [e async for e in not_in_documents(0.31, 0.7, outcome)]
    assert events[0].source is Side.NONE
    assert "do not contain" in events[0].text
    assert outcome.answer == events[0].text
    assert outcome.answered_by is Side.NONE
