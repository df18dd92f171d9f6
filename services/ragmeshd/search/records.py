"""The search service's domain records, independent of protobuf and of the backends."""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field

import numpy as np

# A metadata value: typed, so that "1", 1.0 and true are three different values.
MetadataValue = str | float | bool
Metadata = dict[str, MetadataValue]

# Metadata keys the server fills from a document's own fields (Document.source, ...) and a
# passage's (PassageInput.section, .page): filterable like any other key.
SOURCE_KEY = "source"
TITLE_KEY = "title"
CONTENT_HASH_KEY = "content_hash"
MTIME_KEY = "mtime"  # seconds since the Unix epoch
SECTION_KEY = "section"
PAGE_KEY = "page"


@dataclass(frozen=True)
class Equals:
    """The value under `key` equals `value` (same type)."""

    key: str
    value: MetadataValue


@dataclass(frozen=True)
class AnyOf:
    """The value under `key` equals one of `values`."""

    key: str
    values: tuple[MetadataValue, ...]


@dataclass(frozen=True)
class NumericRange:
    """The value under `key` is a number within every bound that is set."""

    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class Visible:
    """The document is visible to a key holding `groups` (runtime/tenancy.py): it has no
    `acl` metadata, or its `acl` (comma-separated groups) names one of `groups`."""

    groups: tuple[str, ...]


Condition = Equals | AnyOf | NumericRange | Visible
# All conditions must hold; empty matches everything.
Filter = tuple[Condition, ...]


class Mode(enum.Enum):
    DENSE = "dense"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection is created with."""

    name: str
    dimensions: int
    embedding_model: str
    hnsw_m: int
    hnsw_ef_construction: int


@dataclass(frozen=True)
class CollectionInfo:
    """A stored collection with its counts."""

    spec: CollectionSpec
    document_count: int
    passage_count: int
    created_at: datetime.datetime


@dataclass(frozen=True)
class Passage:
    """One searchable piece of a document, with its vector and the metadata of its own
    (section, page) stored with the document's."""

    index: int
    text: str
    vector: np.ndarray
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedDocument:
    """A validated document, split and embedded, ready to store."""

    id: str
    text: str
    metadata: Metadata
    passages: list[Passage]


@dataclass(frozen=True)
class StoredDocument:
    """A document as stored (without vectors)."""

    id: str
    text: str
    metadata: Metadata
    passage_count: int


@dataclass(frozen=True)
class DocumentSummary:
    """A stored document as ListDocuments describes it."""

    id: str
    metadata: Metadata
    passage_count: int


@dataclass(frozen=True)
class DocumentPage:
    """One page of ListDocuments: the documents and the token of the next page ("" at the
    end; opaque, each backend makes its own)."""

    documents: list[DocumentSummary]
    next_token: str


@dataclass(frozen=True)
class PassageHit:
    """A passage found by one ranking, with that ranking's score (higher is better)."""

    document_id: str
    passage_index: int
    text: str
    metadata: Metadata
    score: float

    @property
    def key(self) -> tuple[str, int]:
        return (self.document_id, self.passage_index)


@dataclass(frozen=True)
class RankedHit:
    """A passage in the final order: its score and its 1-based rank in each mode (0 = absent)."""

    passage: PassageHit
    score: float
    dense_rank: int = 0
    keyword_rank: int = 0


class FusionMethod(enum.Enum):
    """How HYBRID combines the two rankings (ragmeshd/search/fusion.py)."""

    RRF = "rrf"
    MIN_MAX = "min_max"
    DISTRIBUTION = "distribution"
    DBSF = "dbsf"


@dataclass(frozen=True)
class FusionParams:
    """How to fuse: the method, RRF's k, and each ranking's weight."""

    k: int
    dense_weight: float
    keyword_weight: float
    method: FusionMethod = FusionMethod.RRF
