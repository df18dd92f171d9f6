"""Checks on SearchService requests. Each failure is an InvalidRequestError whose message
names the offending field and the limit it breaks; nothing is written before these pass."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.runtime.tenancy import ACL_KEY, TenancyError, acl_text, parse_groups
from ragmeshd.search.fields import (
    InvalidRequestError,
    ListInput,
    PassageText,
    check_list,
    check_passages,
    check_source_prefix,
    document_fields,
)
from ragmeshd.search.records import (
    FusionMethod,
    FusionParams,
    Metadata,
    MetadataValue,
    Mode,
)
from ragmeshd.settings import SearchSettings

COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HNSW_M_RANGE = (2, 100)
HNSW_EF_CONSTRUCTION_RANGE = (4, 1000)
RRF_K_RANGE = (1, 1000)
RRF_WEIGHT_MAX = 100.0

__all__ = [
    "InvalidRequestError",
    "ListInput",
    "PassageText",
    "check_list",
    "check_source_prefix",
]

_MODES = {
    pb.SEARCH_MODE_UNSPECIFIED: Mode.HYBRID,
    pb.SEARCH_MODE_DENSE: Mode.DENSE,
    pb.SEARCH_MODE_KEYWORD: Mode.KEYWORD,
    pb.SEARCH_MODE_HYBRID: Mode.HYBRID,
}


@dataclass(frozen=True)
class DocumentInput:
    """A validated document before it is split and embedded."""

    id: str
    text: str
    metadata: Metadata
    vector: np.ndarray | None
    # The client's passages (Document.passages); None: the server splits `text`.
    passages: list[PassageText] | None = None


@dataclass(frozen=True)
class SearchInput:
    """A validated Search request (the vector's length is checked against the collection)."""

    mode: Mode
    text: str
    vector: np.ndarray | None
    top_k: int
    fusion: FusionParams


def check_collection_name(name: str, field: str = "name") -> str:
    if not COLLECTION_NAME.match(name):
        raise InvalidRequestError(
            f"{field} {name!r} is not a valid collection name: use 1 to 63 characters of a-z,"
            " 0-9, '_' and '-', starting with a letter or digit"
        )
    return name


def check_dimensions(dimensions: int, max_dimensions: int) -> None:
    if not 0 <= dimensions <= max_dimensions:
        raise InvalidRequestError(
            f"dimensions is {dimensions}; it must be 1 to {max_dimensions} (0 means the"
            " embedding model's)"
        )


def check_index_settings(m: int, ef_construction: int) -> None:
    low, high = HNSW_M_RANGE
    if not low <= m <= high:
        raise InvalidRequestError(f"index_settings.hnsw_m is {m}; it must be {low} to {high}")
    low, high = HNSW_EF_CONSTRUCTION_RANGE
    if not low <= ef_construction <= high:
        raise InvalidRequestError(
            f"index_settings.hnsw_ef_construction is {ef_construction}; it must be {low} to {high}"
        )
    if ef_construction < 2 * m:
        raise InvalidRequestError(
            f"index_settings.hnsw_ef_construction ({ef_construction}) must be at least twice"
            f" hnsw_m ({m})"
        )


def check_document_id(document_id: str, field: str, max_chars: int) -> str:
    if not document_id:
        raise InvalidRequestError(f"{field} is empty: give every document an id")
    if len(document_id) > max_chars:
        raise InvalidRequestError(
            f"{field} has {len(document_id)} characters; the limit is {max_chars}"
        )
    if any(unicodedata.category(char) == "Cc" for char in document_id):
        raise InvalidRequestError(f"{field} contains a control character")
    return document_id


def check_vector(values: Sequence[float], field: str) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    if not np.all(np.isfinite(vector)):
        raise InvalidRequestError(f"{field} contains a value that is not a finite number")
    if not np.any(vector):
        raise InvalidRequestError(f"{field} is all zeros; cosine similarity needs a direction")
    return vector


def check_vector_dimensions(vector: np.ndarray, dimensions: int, field: str) -> None:
    if vector.shape[0] != dimensions:
        raise InvalidRequestError(
            f"{field} has {vector.shape[0]} values; the collection's vectors have {dimensions}"
        )


def metadata_from_proto(
    metadata: Mapping[str, pb.MetadataValue], field: str, settings: SearchSettings
) -> Metadata:
    if len(metadata) > settings.max_metadata_keys:
        raise InvalidRequestError(
            f"{field} has {len(metadata)} keys; the limit is {settings.max_metadata_keys}"
        )
    result: Metadata = {}
    for key in sorted(metadata):
        check_metadata_key(key, f"{field} key {key!r}", settings)
        result[key] = value_from_proto(metadata[key], f"{field}[{key!r}]", settings)
    if ACL_KEY in result:
        result[ACL_KEY] = check_acl(result[ACL_KEY], f"{field}[{ACL_KEY!r}]")
    return result


def check_acl(value: MetadataValue, field: str) -> str:
    """A document's `acl`: one or more comma-separated group names (runtime/tenancy.py)."""
    try:
        groups = parse_groups(value) if isinstance(value, str) else ()
    except TenancyError as exc:
        raise InvalidRequestError(f"{field}: {exc}") from None
    if not groups:
        raise InvalidRequestError(
            f'{field} must name one or more groups, comma-separated (e.g. "finance,legal")'
        )
    return acl_text(groups)


def check_metadata_key(key: str, field: str, settings: SearchSettings) -> str:
    if not 1 <= len(key) <= settings.max_metadata_key_chars or not METADATA_KEY.match(key):
        raise InvalidRequestError(
            f"{field} is not a valid metadata key: use 1 to {settings.max_metadata_key_chars}"
            " characters of letters, digits and '_', starting with a letter or '_'"
        )
    return key


def value_from_proto(
    value: pb.MetadataValue, field: str, settings: SearchSettings
) -> MetadataValue:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        if len(value.string_value) > settings.max_metadata_string_chars:
            raise InvalidRequestError(
                f"{field} has {len(value.string_value)} characters; the limit is"
                f" {settings.max_metadata_string_chars}"
            )
        return value.string_value
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            raise InvalidRequestError(f"{field} is not a finite number")
        return float(value.number_value)
    if kind == "bool_value":
        return bool(value.bool_value)
    raise InvalidRequestError(f"{field} has no value: set string_value, number_value or bool_value")


def check_documents(
    documents: Sequence[pb.Document], settings: SearchSettings
) -> list[DocumentInput]:
    limit = settings.max_documents_per_upsert
    if not documents:
        raise InvalidRequestError(f"documents is empty: send 1 to {limit} documents")
    if len(documents) > limit:
        raise InvalidRequestError(
            f"documents has {len(documents)} documents; the limit is {limit} per call"
        )
    seen: dict[str, int] = {}
    checked = []
    for index, document in enumerate(documents):
        field = f"documents[{index}]"
        document_id = check_document_id(document.id, f"{field}.id", settings.max_document_id_chars)
        if document_id in seen:
            raise InvalidRequestError(
                f"{field}.id {document_id!r} repeats documents[{seen[document_id]}].id; ids in"
                " one call must be distinct"
            )
        seen[document_id] = index
        metadata = metadata_from_proto(document.metadata, f"{field}.metadata", settings)
        metadata.update(document_fields(document, field))
        vector = check_vector(document.vector, f"{field}.vector") if document.vector else None
        if document.passages:
            passages = check_passages(document, field, settings)
            text = "\n\n".join(passage.text for passage in passages)
            checked.append(DocumentInput(document_id, text, metadata, None, passages))
            continue
        if not document.text.strip():
            raise InvalidRequestError(f"{field}.text is empty or only whitespace")
        if len(document.text) > settings.max_document_chars:
            raise InvalidRequestError(
                f"{field}.text has {len(document.text)} characters; the limit is"
                f" {settings.max_document_chars}"
            )
        checked.append(DocumentInput(document_id, document.text, metadata, vector))
    return checked


def check_ids(ids: Sequence[str], settings: SearchSettings) -> list[str]:
    limit = settings.max_ids_per_delete
    if not ids:
        raise InvalidRequestError(f"ids is empty: send 1 to {limit} ids")
    if len(ids) > limit:
        raise InvalidRequestError(f"ids has {len(ids)} ids; the limit is {limit} per call")
    for index, document_id in enumerate(ids):
        check_document_id(document_id, f"ids[{index}]", settings.max_document_id_chars)
    return list(dict.fromkeys(ids))


def check_search(request: pb.SearchRequest, settings: SearchSettings) -> SearchInput:
    mode = _MODES.get(request.mode)
    if mode is None:
        raise InvalidRequestError(
            f"mode {request.mode} is not a SearchMode: use DENSE, KEYWORD or HYBRID"
        )
    top_k = request.top_k or settings.default_top_k
    if not 1 <= top_k <= settings.max_top_k:
        raise InvalidRequestError(
            f"top_k is {request.top_k}; it must be 1 to {settings.max_top_k} (0 means"
            f" {settings.default_top_k})"
        )
    if len(request.query) > settings.max_query_chars:
        raise InvalidRequestError(
            f"query has {len(request.query)} characters; the limit is {settings.max_query_chars}"
        )
    text = request.query
    vector = check_vector(request.query_vector, "query_vector") if request.query_vector else None
    if not text.strip():
        if mode is not Mode.DENSE:
            raise InvalidRequestError(
                f"query is empty; {mode.name} search needs query text (at most"
                f" {settings.max_query_chars} characters)"
            )
        if vector is None:
            raise InvalidRequestError("query is empty: send query text or a query_vector")
    return SearchInput(mode, text, vector, top_k, _fusion(request, settings))


_FUSION_METHODS = {
    pb.FUSION_METHOD_RRF: FusionMethod.RRF,
    pb.FUSION_METHOD_MIN_MAX: FusionMethod.MIN_MAX,
    pb.FUSION_METHOD_DISTRIBUTION: FusionMethod.DISTRIBUTION,
    pb.FUSION_METHOD_DBSF: FusionMethod.DBSF,
}


def _fusion(request: pb.SearchRequest, settings: SearchSettings) -> FusionParams:
    if request.fusion_method == pb.FUSION_METHOD_UNSPECIFIED:
        method = FusionMethod(settings.fusion_method)
    elif request.fusion_method in _FUSION_METHODS:
        method = _FUSION_METHODS[request.fusion_method]
    else:
        raise InvalidRequestError(
            f"fusion_method {request.fusion_method} is not a FusionMethod: use RRF, MIN_MAX,"
            " DISTRIBUTION or DBSF"
        )
    k = request.rrf_k if request.HasField("rrf_k") else settings.rrf_k
    low, high = RRF_K_RANGE
    if not low <= k <= high:
        raise InvalidRequestError(f"rrf_k is {k}; it must be {low} to {high}")
    if method is FusionMethod.RRF:
        defaults = (settings.rrf_dense_weight, settings.rrf_keyword_weight)
    else:
        defaults = (settings.score_fusion_dense_weight, settings.score_fusion_keyword_weight)
    weights = []
    for name, default in zip(("dense_weight", "keyword_weight"), defaults, strict=True):
        weight = getattr(request, name) if request.HasField(name) else default
        if not (math.isfinite(weight) and 0 <= weight <= RRF_WEIGHT_MAX):
            raise InvalidRequestError(f"{name} is {weight}; it must be 0 to {RRF_WEIGHT_MAX:g}")
        weights.append(float(weight))
    if not any(weights):
        raise InvalidRequestError("dense_weight and keyword_weight are both 0; one must be > 0")
    return FusionParams(k=k, dense_weight=weights[0], keyword_weight=weights[1], method=method)
