"""How the Qdrant backend lays a passage out as a point: its id, vectors and payload, shared by
the reads (qdrant.py) and the writes (qdrant_writes.py).

A point is one passage: a named dense vector (DENSE) and a named sparse vector of BM25 term
weights (KEYWORDS). The payload holds the passage's document id, index, text and length in
terms, the document's metadata merged with the passage's own under "metadata" (the filters
test it), the document's groups as a list, and on passage 0 the whole document text, its
passage count and the document's own metadata.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from qdrant_client import models as qm

from ragmeshd.runtime.tenancy import ACL_KEY
from ragmeshd.search.filters import QDRANT_ACL_FIELD, QDRANT_METADATA_FIELD, acl_groups
from ragmeshd.search.records import Metadata, Passage, PreparedDocument

DENSE = "dense"
KEYWORDS = "keywords"
_POINT_NAMESPACE = uuid.UUID("5d1c7e0a-8f6b-4f38-9a51-3f1b2f0c9e11")
FIRST_PASSAGE = qm.FieldCondition(key="passage_index", match=qm.MatchValue(value=0))

# On a document's first point: the document's metadata without that passage's own keys.
_DOCUMENT_METADATA = "document_metadata"


def point_id(document_id: str, passage_index: int) -> str:
    """A stable point id per passage (Qdrant ids are integers or UUIDs)."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{document_id}\x00{passage_index}"))


def payload(document: PreparedDocument, passage: Passage, length: int) -> dict[str, Any]:
    """A passage's point payload."""
    found: dict[str, Any] = {
        "document_id": document.id,
        "passage_index": passage.index,
        "passage_count": len(document.passages),
        "length": length,
        "text": passage.text,
        QDRANT_METADATA_FIELD: {**document.metadata, **passage.metadata},
    }
    if groups := acl_groups(document.metadata.get(ACL_KEY)):
        found[QDRANT_ACL_FIELD] = groups
    if passage.index == 0:
        found["document_text"] = document.text
        found[_DOCUMENT_METADATA] = document.metadata
    return found


def document_metadata(stored: dict[str, Any]) -> Metadata:
    """A first point's document metadata (points stored before passages had metadata of their
    own hold it only under QDRANT_METADATA_FIELD)."""
    found = stored.get(_DOCUMENT_METADATA)
    if found is None:
        found = stored.get(QDRANT_METADATA_FIELD)
    return dict(found or {})


def document_filter(ids: Sequence[str], *extra: qm.Condition) -> qm.Filter:
    """The points of documents `ids` (and `extra`)."""
    return qm.Filter(
        must=[qm.FieldCondition(key="document_id", match=qm.MatchAny(any=list(ids))), *extra]
    )
