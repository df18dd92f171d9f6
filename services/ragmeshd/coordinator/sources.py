"""The numbered sources of an answer: the context passages as the prompt numbered them, with
what their documents' metadata says about where they come from (an ingest stores `source`,
`title`, `section` and `page`), and whether the answer cites them."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmeshd.coordinator.budget import Passage

MetadataValue = str | float | bool

# What the answer says when only the local model could answer and no passage is relevant
# enough (the confidence threshold): a 135M model asked anyway would invent an answer.
NOT_IN_DOCUMENTS = (
    "The documents do not contain an answer to this question (no passage is relevant"
    " enough: confidence {confidence:.2f} < threshold {threshold:.2f})."
)


def metadata_pairs(
    metadata: Mapping[str, search_pb.MetadataValue],
) -> tuple[tuple[str, MetadataValue], ...]:
    """A search hit's metadata as sorted (key, value) pairs."""
    pairs: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        kind = value.WhichOneof("kind")
        if kind is not None:
            pairs[key] = getattr(value, kind)
    return tuple(sorted(pairs.items()))


def hit_metadata(hit: search_pb.SearchHit) -> tuple[tuple[str, MetadataValue], ...]:
    """A hit's metadata with its source, title, section and page fields over it."""
    pairs = dict(metadata_pairs(hit.metadata))
    fields = {"source": hit.source, "title": hit.title, "section": hit.section}
    pairs.update({key: value for key, value in fields.items() if value})
    if hit.page:
        pairs["page"] = float(hit.page)
    return tuple(sorted(pairs.items()))


def _text(metadata: Mapping[str, MetadataValue], *keys: str) -> str:
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _page(metadata: Mapping[str, MetadataValue]) -> int:
    value = metadata.get("page")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0)


def answer_sources(
    passages: Sequence[Passage], cited: Collection[int], removed: int = 0
) -> pb.AnswerSources:
    """Every passage as a Source numbered from 1; `cited` are the numbers the answer cites."""
    sources = []
    for number, passage in enumerate(passages, 1):
        metadata = dict(passage.metadata)
        sources.append(
            pb.Source(
                number=number,
                source=_text(metadata, "source", "path", "file") or passage.document_id,
                title=_text(metadata, "title"),
                section=_text(metadata, "section"),
                page=_page(metadata),
                score=passage.score,
                text=passage.text,
                collection=passage.collection,
                document_id=passage.document_id,
                cited=number in cited,
            )
        )
    return pb.AnswerSources(sources=sources, removed_citation_count=removed)
