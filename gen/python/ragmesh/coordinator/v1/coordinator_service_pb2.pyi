import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ragmesh.search.v1 import search_service_pb2 as _search_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_LOCAL: _ClassVar[Decision]
    DECISION_REMOTE: _ClassVar[Decision]
    DECISION_NONE: _ClassVar[Decision]
DECISION_UNSPECIFIED: Decision
DECISION_LOCAL: Decision
DECISION_REMOTE: Decision
DECISION_NONE: Decision

class ContextPassage(_message.Message):
    __slots__ = ("collection", "document_id", "text", "passage_index", "score", "token_count", "truncated")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document_id: str
    text: str
    passage_index: int
    score: float
    token_count: int
    truncated: bool
    def __init__(self, collection: _Optional[str] = ..., document_id: _Optional[str] = ..., text: _Optional[str] = ..., passage_index: _Optional[int] = ..., score: _Optional[float] = ..., token_count: _Optional[int] = ..., truncated: _Optional[bool] = ...) -> None: ...

class AugmentQueryRequest(_message.Message):
    __slots__ = ("query", "collections", "top_k", "max_context_tokens", "mode")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    query: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    max_context_tokens: int
    mode: _search_service_pb2.SearchMode
    def __init__(self, query: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., max_context_tokens: _Optional[int] = ..., mode: _Optional[_Union[_search_service_pb2.SearchMode, str]] = ...) -> None: ...

class AugmentQueryResponse(_message.Message):
    __slots__ = ("passages", "context_token_count", "confidence", "system_prompt", "prompt", "collections", "duplicate_count", "dropped_count", "search_ms")
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MS_FIELD_NUMBER: _ClassVar[int]
    passages: _containers.RepeatedCompositeFieldContainer[ContextPassage]
    context_token_count: int
    confidence: float
    system_prompt: str
    prompt: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    duplicate_count: int
    dropped_count: int
    search_ms: float
    def __init__(self, passages: _Optional[_Iterable[_Union[ContextPassage, _Mapping]]] = ..., context_token_count: _Optional[int] = ..., confidence: _Optional[float] = ..., system_prompt: _Optional[str] = ..., prompt: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., duplicate_count: _Optional[int] = ..., dropped_count: _Optional[int] = ..., search_ms: _Optional[float] = ...) -> None: ...

class AskRequest(_message.Message):
    __slots__ = ("query", "collections", "top_k", "max_context_tokens", "mode", "force", "max_answer_tokens")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    MAX_ANSWER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    query: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    max_context_tokens: int
    mode: _search_service_pb2.SearchMode
    force: Decision
    max_answer_tokens: int
    def __init__(self, query: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., max_context_tokens: _Optional[int] = ..., mode: _Optional[_Union[_search_service_pb2.SearchMode, str]] = ..., force: _Optional[_Union[Decision, str]] = ..., max_answer_tokens: _Optional[int] = ...) -> None: ...

class AnswerChunk(_message.Message):
    __slots__ = ("text", "source", "discard_previous")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DISCARD_PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    text: str
    source: Decision
    discard_previous: bool
    def __init__(self, text: _Optional[str] = ..., source: _Optional[_Union[Decision, str]] = ..., discard_previous: _Optional[bool] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("search_ms", "routing_ms", "first_chunk_ms", "generation_ms", "total_ms")
    SEARCH_MS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHUNK_MS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    search_ms: float
    routing_ms: float
    first_chunk_ms: float
    generation_ms: float
    total_ms: float
    def __init__(self, search_ms: _Optional[float] = ..., routing_ms: _Optional[float] = ..., first_chunk_ms: _Optional[float] = ..., generation_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class AskSummary(_message.Message):
    __slots__ = ("interaction_id", "decision", "reason", "answered_by", "model", "fallback", "fallback_reason", "confidence", "passages", "timings")
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    decision: Decision
    reason: str
    answered_by: Decision
    model: str
    fallback: bool
    fallback_reason: str
    confidence: float
    passages: _containers.RepeatedCompositeFieldContainer[ContextPassage]
    timings: Timings
    def __init__(self, interaction_id: _Optional[str] = ..., decision: _Optional[_Union[Decision, str]] = ..., reason: _Optional[str] = ..., answered_by: _Optional[_Union[Decision, str]] = ..., model: _Optional[str] = ..., fallback: _Optional[bool] = ..., fallback_reason: _Optional[str] = ..., confidence: _Optional[float] = ..., passages: _Optional[_Iterable[_Union[ContextPassage, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("number", "source", "title", "section", "page", "score", "text", "collection", "document_id", "cited")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CITED_FIELD_NUMBER: _ClassVar[int]
    number: int
    source: str
    title: str
    section: str
    page: int
    score: float
    text: str
    collection: str
    document_id: str
    cited: bool
    def __init__(self, number: _Optional[int] = ..., source: _Optional[str] = ..., title: _Optional[str] = ..., section: _Optional[str] = ..., page: _Optional[int] = ..., score: _Optional[float] = ..., text: _Optional[str] = ..., collection: _Optional[str] = ..., document_id: _Optional[str] = ..., cited: _Optional[bool] = ...) -> None: ...

class AnswerSources(_message.Message):
    __slots__ = ("sources", "removed_citation_count")
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_CITATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedCompositeFieldContainer[Source]
    removed_citation_count: int
    def __init__(self, sources: _Optional[_Iterable[_Union[Source, _Mapping]]] = ..., removed_citation_count: _Optional[int] = ...) -> None: ...

class AskResponse(_message.Message):
    __slots__ = ("chunk", "summary", "sources")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    chunk: AnswerChunk
    summary: AskSummary
    sources: AnswerSources
    def __init__(self, chunk: _Optional[_Union[AnswerChunk, _Mapping]] = ..., summary: _Optional[_Union[AskSummary, _Mapping]] = ..., sources: _Optional[_Union[AnswerSources, _Mapping]] = ...) -> None: ...

class ContextReference(_message.Message):
    __slots__ = ("collection", "document_id", "passage_index", "score")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document_id: str
    passage_index: int
    score: float
    def __init__(self, collection: _Optional[str] = ..., document_id: _Optional[str] = ..., passage_index: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class Interaction(_message.Message):
    __slots__ = ("interaction_id", "create_time", "query", "collections", "decision", "reason", "answered_by", "model", "fallback", "fallback_reason", "confidence", "context", "answer", "latency_ms", "rating", "outcome", "value_score", "feedback_time", "timings")
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VALUE_SCORE_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TIME_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    create_time: _timestamp_pb2.Timestamp
    query: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    decision: Decision
    reason: str
    answered_by: Decision
    model: str
    fallback: bool
    fallback_reason: str
    confidence: float
    context: _containers.RepeatedCompositeFieldContainer[ContextReference]
    answer: str
    latency_ms: float
    rating: int
    outcome: str
    value_score: float
    feedback_time: _timestamp_pb2.Timestamp
    timings: Timings
    def __init__(self, interaction_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., query: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., decision: _Optional[_Union[Decision, str]] = ..., reason: _Optional[str] = ..., answered_by: _Optional[_Union[Decision, str]] = ..., model: _Optional[str] = ..., fallback: _Optional[bool] = ..., fallback_reason: _Optional[str] = ..., confidence: _Optional[float] = ..., context: _Optional[_Iterable[_Union[ContextReference, _Mapping]]] = ..., answer: _Optional[str] = ..., latency_ms: _Optional[float] = ..., rating: _Optional[int] = ..., outcome: _Optional[str] = ..., value_score: _Optional[float] = ..., feedback_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("interaction_id", "rating", "outcome")
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    rating: int
    outcome: str
    def __init__(self, interaction_id: _Optional[str] = ..., rating: _Optional[int] = ..., outcome: _Optional[str] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("interaction",)
    INTERACTION_FIELD_NUMBER: _ClassVar[int]
    interaction: Interaction
    def __init__(self, interaction: _Optional[_Union[Interaction, _Mapping]] = ...) -> None: ...

class GetInteractionRequest(_message.Message):
    __slots__ = ("interaction_id",)
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    def __init__(self, interaction_id: _Optional[str] = ...) -> None: ...

class GetInteractionResponse(_message.Message):
    __slots__ = ("interaction",)
    INTERACTION_FIELD_NUMBER: _ClassVar[int]
    interaction: Interaction
    def __init__(self, interaction: _Optional[_Union[Interaction, _Mapping]] = ...) -> None: ...

class ExportInteractionsRequest(_message.Message):
    __slots__ = ("ratings", "start_time", "end_time", "max_interactions")
    RATINGS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    ratings: _containers.RepeatedScalarFieldContainer[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    max_interactions: int
    def __init__(self, ratings: _Optional[_Iterable[int]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_interactions: _Optional[int] = ...) -> None: ...

class ExportInteractionsResponse(_message.Message):
    __slots__ = ("interaction",)
    INTERACTION_FIELD_NUMBER: _ClassVar[int]
    interaction: Interaction
    def __init__(self, interaction: _Optional[_Union[Interaction, _Mapping]] = ...) -> None: ...
