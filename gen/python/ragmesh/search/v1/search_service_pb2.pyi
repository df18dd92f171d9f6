import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_DENSE: _ClassVar[SearchMode]
    SEARCH_MODE_KEYWORD: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]

class FusionMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUSION_METHOD_UNSPECIFIED: _ClassVar[FusionMethod]
    FUSION_METHOD_RRF: _ClassVar[FusionMethod]
    FUSION_METHOD_MIN_MAX: _ClassVar[FusionMethod]
    FUSION_METHOD_DISTRIBUTION: _ClassVar[FusionMethod]
    FUSION_METHOD_DBSF: _ClassVar[FusionMethod]
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_DENSE: SearchMode
SEARCH_MODE_KEYWORD: SearchMode
SEARCH_MODE_HYBRID: SearchMode
FUSION_METHOD_UNSPECIFIED: FusionMethod
FUSION_METHOD_RRF: FusionMethod
FUSION_METHOD_MIN_MAX: FusionMethod
FUSION_METHOD_DISTRIBUTION: FusionMethod
FUSION_METHOD_DBSF: FusionMethod

class IndexSettings(_message.Message):
    __slots__ = ("hnsw_m", "hnsw_ef_construction")
    HNSW_M_FIELD_NUMBER: _ClassVar[int]
    HNSW_EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    hnsw_m: int
    hnsw_ef_construction: int
    def __init__(self, hnsw_m: _Optional[int] = ..., hnsw_ef_construction: _Optional[int] = ...) -> None: ...

class Collection(_message.Message):
    __slots__ = ("name", "embedding_model", "dimensions", "index_settings", "document_count", "passage_count", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    INDEX_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    embedding_model: str
    dimensions: int
    index_settings: IndexSettings
    document_count: int
    passage_count: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., embedding_model: _Optional[str] = ..., dimensions: _Optional[int] = ..., index_settings: _Optional[_Union[IndexSettings, _Mapping]] = ..., document_count: _Optional[int] = ..., passage_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "dimensions", "embedding_model", "index_settings")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimensions: int
    embedding_model: str
    index_settings: IndexSettings
    def __init__(self, name: _Optional[str] = ..., dimensions: _Optional[int] = ..., embedding_model: _Optional[str] = ..., index_settings: _Optional[_Union[IndexSettings, _Mapping]] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MetadataValue(_message.Message):
    __slots__ = ("string_value", "number_value", "bool_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    number_value: float
    bool_value: bool
    def __init__(self, string_value: _Optional[str] = ..., number_value: _Optional[float] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "text", "metadata", "vector", "source", "title", "content_hash", "modify_time", "passages")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetadataValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    MODIFY_TIME_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    metadata: _containers.MessageMap[str, MetadataValue]
    vector: _containers.RepeatedScalarFieldContainer[float]
    source: str
    title: str
    content_hash: str
    modify_time: _timestamp_pb2.Timestamp
    passages: _containers.RepeatedCompositeFieldContainer[PassageInput]
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Mapping[str, MetadataValue]] = ..., vector: _Optional[_Iterable[float]] = ..., source: _Optional[str] = ..., title: _Optional[str] = ..., content_hash: _Optional[str] = ..., modify_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., passages: _Optional[_Iterable[_Union[PassageInput, _Mapping]]] = ...) -> None: ...

class PassageInput(_message.Message):
    __slots__ = ("text", "section", "page")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    section: str
    page: int
    def __init__(self, text: _Optional[str] = ..., section: _Optional[str] = ..., page: _Optional[int] = ...) -> None: ...

class UpsertDocumentsRequest(_message.Message):
    __slots__ = ("collection", "documents")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class UpsertDocumentsResponse(_message.Message):
    __slots__ = ("document_count", "passage_count")
    DOCUMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    document_count: int
    passage_count: int
    def __init__(self, document_count: _Optional[int] = ..., passage_count: _Optional[int] = ...) -> None: ...

class UploadFilesRequest(_message.Message):
    __slots__ = ("collection", "file_name", "chunk", "acl")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ACL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    file_name: str
    chunk: _httpbody_pb2.HttpBody
    acl: str
    def __init__(self, collection: _Optional[str] = ..., file_name: _Optional[str] = ..., chunk: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ..., acl: _Optional[str] = ...) -> None: ...

class UploadedFile(_message.Message):
    __slots__ = ("id", "title", "passage_count", "content_hash")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    passage_count: int
    content_hash: str
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., passage_count: _Optional[int] = ..., content_hash: _Optional[str] = ...) -> None: ...

class UploadFilesResponse(_message.Message):
    __slots__ = ("files", "passage_count")
    FILES_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[UploadedFile]
    passage_count: int
    def __init__(self, files: _Optional[_Iterable[_Union[UploadedFile, _Mapping]]] = ..., passage_count: _Optional[int] = ...) -> None: ...

class DeleteDocumentsRequest(_message.Message):
    __slots__ = ("collection", "ids", "source_prefix")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    source_prefix: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., source_prefix: _Optional[str] = ...) -> None: ...

class DeleteDocumentsResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class GetDocumentRequest(_message.Message):
    __slots__ = ("collection", "id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    id: str
    def __init__(self, collection: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class GetDocumentResponse(_message.Message):
    __slots__ = ("document", "passage_count")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    document: Document
    passage_count: int
    def __init__(self, document: _Optional[_Union[Document, _Mapping]] = ..., passage_count: _Optional[int] = ...) -> None: ...

class ListDocumentsRequest(_message.Message):
    __slots__ = ("collection", "source_prefix", "page_size", "page_token")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    source_prefix: str
    page_size: int
    page_token: str
    def __init__(self, collection: _Optional[str] = ..., source_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class DocumentSummary(_message.Message):
    __slots__ = ("id", "source", "title", "content_hash", "modify_time", "passage_count")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    MODIFY_TIME_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    title: str
    content_hash: str
    modify_time: _timestamp_pb2.Timestamp
    passage_count: int
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., title: _Optional[str] = ..., content_hash: _Optional[str] = ..., modify_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., passage_count: _Optional[int] = ...) -> None: ...

class ListDocumentsResponse(_message.Message):
    __slots__ = ("documents", "next_page_token")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[DocumentSummary]
    next_page_token: str
    def __init__(self, documents: _Optional[_Iterable[_Union[DocumentSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CountDocumentsRequest(_message.Message):
    __slots__ = ("collection", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: MetadataFilter
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[_Union[MetadataFilter, _Mapping]] = ...) -> None: ...

class CountDocumentsResponse(_message.Message):
    __slots__ = ("document_count",)
    DOCUMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    document_count: int
    def __init__(self, document_count: _Optional[int] = ...) -> None: ...

class MetadataFilter(_message.Message):
    __slots__ = ("conditions",)
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    conditions: _containers.RepeatedCompositeFieldContainer[FieldCondition]
    def __init__(self, conditions: _Optional[_Iterable[_Union[FieldCondition, _Mapping]]] = ...) -> None: ...

class FieldCondition(_message.Message):
    __slots__ = ("key", "equals", "any_of", "range")
    KEY_FIELD_NUMBER: _ClassVar[int]
    EQUALS_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    key: str
    equals: MetadataValue
    any_of: ValueList
    range: NumericRange
    def __init__(self, key: _Optional[str] = ..., equals: _Optional[_Union[MetadataValue, _Mapping]] = ..., any_of: _Optional[_Union[ValueList, _Mapping]] = ..., range: _Optional[_Union[NumericRange, _Mapping]] = ...) -> None: ...

class ValueList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[MetadataValue]
    def __init__(self, values: _Optional[_Iterable[_Union[MetadataValue, _Mapping]]] = ...) -> None: ...

class NumericRange(_message.Message):
    __slots__ = ("gt", "gte", "lt", "lte")
    GT_FIELD_NUMBER: _ClassVar[int]
    GTE_FIELD_NUMBER: _ClassVar[int]
    LT_FIELD_NUMBER: _ClassVar[int]
    LTE_FIELD_NUMBER: _ClassVar[int]
    gt: float
    gte: float
    lt: float
    lte: float
    def __init__(self, gt: _Optional[float] = ..., gte: _Optional[float] = ..., lt: _Optional[float] = ..., lte: _Optional[float] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "query", "query_vector", "top_k", "filter", "mode", "rrf_k", "dense_weight", "keyword_weight", "fusion_method")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    DENSE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FUSION_METHOD_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query: str
    query_vector: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    filter: MetadataFilter
    mode: SearchMode
    rrf_k: int
    dense_weight: float
    keyword_weight: float
    fusion_method: FusionMethod
    def __init__(self, collection: _Optional[str] = ..., query: _Optional[str] = ..., query_vector: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ..., filter: _Optional[_Union[MetadataFilter, _Mapping]] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., rrf_k: _Optional[int] = ..., dense_weight: _Optional[float] = ..., keyword_weight: _Optional[float] = ..., fusion_method: _Optional[_Union[FusionMethod, str]] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("document_id", "passage_text", "passage_index", "metadata", "score", "dense_rank", "keyword_rank", "source", "title", "section", "page")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetadataValue, _Mapping]] = ...) -> None: ...
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_TEXT_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DENSE_RANK_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_RANK_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    passage_text: str
    passage_index: int
    metadata: _containers.MessageMap[str, MetadataValue]
    score: float
    dense_rank: int
    keyword_rank: int
    source: str
    title: str
    section: str
    page: int
    def __init__(self, document_id: _Optional[str] = ..., passage_text: _Optional[str] = ..., passage_index: _Optional[int] = ..., metadata: _Optional[_Mapping[str, MetadataValue]] = ..., score: _Optional[float] = ..., dense_rank: _Optional[int] = ..., keyword_rank: _Optional[int] = ..., source: _Optional[str] = ..., title: _Optional[str] = ..., section: _Optional[str] = ..., page: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "mode")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    mode: SearchMode
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., mode: _Optional[_Union[SearchMode, str]] = ...) -> None: ...
