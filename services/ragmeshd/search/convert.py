"""From the search service's records to its response messages."""

from __future__ import annotations

from collections.abc import MutableMapping

from google.protobuf.timestamp_pb2 import Timestamp

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.search.records import (
    CONTENT_HASH_KEY,
    MTIME_KEY,
    PAGE_KEY,
    SECTION_KEY,
    SOURCE_KEY,
    TITLE_KEY,
    CollectionInfo,
    DocumentSummary,
    Metadata,
    MetadataValue,
    Mode,
    RankedHit,
)

MODES = {
    Mode.DENSE: pb.SEARCH_MODE_DENSE,
    Mode.KEYWORD: pb.SEARCH_MODE_KEYWORD,
    Mode.HYBRID: pb.SEARCH_MODE_HYBRID,
}


def value_to_proto(value: MetadataValue) -> pb.MetadataValue:
    if isinstance(value, bool):
        return pb.MetadataValue(bool_value=value)
    if isinstance(value, str):
        return pb.MetadataValue(string_value=value)
    return pb.MetadataValue(number_value=float(value))


def fill_metadata(target: MutableMapping[str, pb.MetadataValue], metadata: Metadata) -> None:
    for key, value in metadata.items():
        target[key].CopyFrom(value_to_proto(value))


def collection_to_proto(info: CollectionInfo) -> pb.Collection:
    created = Timestamp()
    created.FromDatetime(info.created_at)
    return pb.Collection(
        name=info.spec.name,
        embedding_model=info.spec.embedding_model,
        dimensions=info.spec.dimensions,
        index_settings=pb.IndexSettings(
            hnsw_m=info.spec.hnsw_m, hnsw_ef_construction=info.spec.hnsw_ef_construction
        ),
        document_count=info.document_count,
        passage_count=info.passage_count,
        create_time=created,
    )


def hit_to_proto(hit: RankedHit) -> pb.SearchHit:
    message = pb.SearchHit(
        document_id=hit.passage.document_id,
        passage_text=hit.passage.text,
        passage_index=hit.passage.passage_index,
        score=hit.score,
        dense_rank=hit.dense_rank,
        keyword_rank=hit.keyword_rank,
    )
    found = hit.passage.metadata
    fill_metadata(message.metadata, found)
    message.source = str(found.get(SOURCE_KEY, ""))
    message.title = str(found.get(TITLE_KEY, ""))
    message.section = str(found.get(SECTION_KEY, ""))
    page = found.get(PAGE_KEY)
    if isinstance(page, int | float) and not isinstance(page, bool):
        message.page = int(page)
    return message


def summary_to_proto(document: DocumentSummary) -> pb.DocumentSummary:
    found = document.metadata
    message = pb.DocumentSummary(
        id=document.id,
        source=str(found.get(SOURCE_KEY, "")),
        title=str(found.get(TITLE_KEY, "")),
        content_hash=str(found.get(CONTENT_HASH_KEY, "")),
        passage_count=document.passage_count,
    )
    mtime = found.get(MTIME_KEY)
    if isinstance(mtime, int | float) and not isinstance(mtime, bool):
        seconds = int(mtime // 1)
        message.modify_time.seconds = seconds
        message.modify_time.nanos = min(round((mtime - seconds) * 1e9), 999_999_999)
    return message
