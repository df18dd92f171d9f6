"""From the search service's records to its response messages."""

from __future__ import annotations

from collections.abc import MutableMapping

from google.protobuf.timestamp_pb2 import Timestamp

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.search.records import CollectionInfo, Metadata, MetadataValue, Mode, RankedHit

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
    fill_metadata(message.metadata, hit.passage.metadata)
    return message
