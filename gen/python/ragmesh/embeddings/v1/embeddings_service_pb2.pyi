from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedPriority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMBED_PRIORITY_UNSPECIFIED: _ClassVar[EmbedPriority]
    EMBED_PRIORITY_INTERACTIVE: _ClassVar[EmbedPriority]
    EMBED_PRIORITY_BULK: _ClassVar[EmbedPriority]
EMBED_PRIORITY_UNSPECIFIED: EmbedPriority
EMBED_PRIORITY_INTERACTIVE: EmbedPriority
EMBED_PRIORITY_BULK: EmbedPriority

class EmbedRequest(_message.Message):
    __slots__ = ("inputs", "normalize", "truncate", "priority")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    normalize: bool
    truncate: bool
    priority: EmbedPriority
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., normalize: _Optional[bool] = ..., truncate: _Optional[bool] = ..., priority: _Optional[_Union[EmbedPriority, str]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values", "token_count", "truncated")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    token_count: int
    truncated: bool
    def __init__(self, values: _Optional[_Iterable[float]] = ..., token_count: _Optional[int] = ..., truncated: _Optional[bool] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "model", "dimensions")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    model: str
    dimensions: int
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model: _Optional[str] = ..., dimensions: _Optional[int] = ...) -> None: ...

class EmbedStreamRequest(_message.Message):
    __slots__ = ("sequence", "inputs", "normalize", "truncate")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    inputs: _containers.RepeatedScalarFieldContainer[str]
    normalize: bool
    truncate: bool
    def __init__(self, sequence: _Optional[int] = ..., inputs: _Optional[_Iterable[str]] = ..., normalize: _Optional[bool] = ..., truncate: _Optional[bool] = ...) -> None: ...

class EmbedStreamResponse(_message.Message):
    __slots__ = ("sequence", "embeddings", "model", "dimensions")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    model: str
    dimensions: int
    def __init__(self, sequence: _Optional[int] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model: _Optional[str] = ..., dimensions: _Optional[int] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model", "dimensions", "max_sequence_length", "max_client_batch", "max_input_chars", "max_batch_texts", "max_batch_delay_ms", "device", "ready", "batches_run", "texts_embedded", "runtime", "cache")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_CLIENT_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    BATCHES_RUN_FIELD_NUMBER: _ClassVar[int]
    TEXTS_EMBEDDED_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    model: str
    dimensions: int
    max_sequence_length: int
    max_client_batch: int
    max_input_chars: int
    max_batch_texts: int
    max_batch_delay_ms: int
    device: str
    ready: bool
    batches_run: int
    texts_embedded: int
    runtime: str
    cache: EmbeddingCacheInfo
    def __init__(self, model: _Optional[str] = ..., dimensions: _Optional[int] = ..., max_sequence_length: _Optional[int] = ..., max_client_batch: _Optional[int] = ..., max_input_chars: _Optional[int] = ..., max_batch_texts: _Optional[int] = ..., max_batch_delay_ms: _Optional[int] = ..., device: _Optional[str] = ..., ready: _Optional[bool] = ..., batches_run: _Optional[int] = ..., texts_embedded: _Optional[int] = ..., runtime: _Optional[str] = ..., cache: _Optional[_Union[EmbeddingCacheInfo, _Mapping]] = ...) -> None: ...

class EmbeddingCacheInfo(_message.Message):
    __slots__ = ("max_bytes", "bytes", "entries", "hits", "misses", "evictions", "shared_tier", "shared_hits", "shared_misses")
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    SHARED_TIER_FIELD_NUMBER: _ClassVar[int]
    SHARED_HITS_FIELD_NUMBER: _ClassVar[int]
    SHARED_MISSES_FIELD_NUMBER: _ClassVar[int]
    max_bytes: int
    bytes: int
    entries: int
    hits: int
    misses: int
    evictions: int
    shared_tier: bool
    shared_hits: int
    shared_misses: int
    def __init__(self, max_bytes: _Optional[int] = ..., bytes: _Optional[int] = ..., entries: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., evictions: _Optional[int] = ..., shared_tier: _Optional[bool] = ..., shared_hits: _Optional[int] = ..., shared_misses: _Optional[int] = ...) -> None: ...
