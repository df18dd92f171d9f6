"""Settings of the search service (`[search]`, RAGMESH_SEARCH__*)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ragmeshd import defaults
from ragmeshd.settings.core import Section
from ragmeshd.settings.shared import BreakerSettings, PostgresSettings, nest


class SearchSettings(Section):
    """The search server: request limits, passages, ranking, the embeddings client and the
    document store (PostgreSQL + pgvector, embedded unless `pg_dsn` is set, or Qdrant,
    embedded unless `qdrant_location` names a server)."""

    listen: str = defaults.SEARCH_LISTEN
    # Prometheus /metrics on loopback; empty turns it off.
    metrics_listen: str = defaults.SEARCH_METRICS_LISTEN
    backend: Literal["pgvector", "qdrant"] = defaults.SEARCH_BACKEND
    # Where Embed calls go: the embeddings server, or Envoy in front of it.
    embeddings_target: str = defaults.EMBEDDINGS_LISTEN

    max_documents_per_upsert: int = Field(defaults.MAX_DOCUMENTS_PER_UPSERT, ge=1, le=10_000)
    max_ids_per_delete: int = Field(defaults.MAX_IDS_PER_DELETE, ge=1, le=100_000)
    max_document_id_chars: int = Field(defaults.MAX_DOCUMENT_ID_CHARS, ge=1, le=4096)
    max_document_chars: int = Field(defaults.MAX_DOCUMENT_CHARS, ge=1)
    max_passages_per_document: int = Field(defaults.MAX_PASSAGES_PER_DOCUMENT, ge=1)
    upload_max_bytes: int = Field(defaults.UPLOAD_MAX_BYTES, ge=1)
    max_metadata_keys: int = Field(defaults.MAX_METADATA_KEYS, ge=0)
    max_metadata_key_chars: int = Field(defaults.MAX_METADATA_KEY_CHARS, ge=1)
    max_metadata_string_chars: int = Field(defaults.MAX_METADATA_STRING_CHARS, ge=1)
    max_top_k: int = Field(defaults.MAX_TOP_K, ge=1, le=1000)
    default_top_k: int = Field(defaults.DEFAULT_TOP_K, ge=1)
    max_query_chars: int = Field(defaults.MAX_QUERY_CHARS, ge=1)
    max_filter_conditions: int = Field(defaults.MAX_FILTER_CONDITIONS, ge=1)
    max_filter_values: int = Field(defaults.MAX_FILTER_VALUES, ge=1)
    max_vector_dimensions: int = Field(defaults.MAX_VECTOR_DIMENSIONS, ge=1, le=2000)

    passage_max_tokens: int = Field(defaults.PASSAGE_MAX_TOKENS, ge=8)
    passage_overlap_tokens: int = Field(defaults.PASSAGE_OVERLAP_TOKENS, ge=0)
    passage_max_chars: int = Field(defaults.PASSAGE_MAX_CHARS, ge=100)

    candidate_multiplier: int = Field(defaults.CANDIDATE_MULTIPLIER, ge=1, le=20)
    hybrid_min_candidates: int = Field(defaults.HYBRID_MIN_CANDIDATES, ge=1, le=1000)
    rrf_k: int = Field(defaults.RRF_K, ge=1, le=1000)
    rrf_dense_weight: float = Field(defaults.RRF_DENSE_WEIGHT, ge=0, le=100)
    rrf_keyword_weight: float = Field(defaults.RRF_KEYWORD_WEIGHT, ge=0, le=100)
    fusion_method: Literal["rrf", "min_max", "distribution"] = defaults.FUSION_METHOD
    score_fusion_dense_weight: float = Field(defaults.SCORE_FUSION_DENSE_WEIGHT, ge=0, le=100)
    score_fusion_keyword_weight: float = Field(defaults.SCORE_FUSION_KEYWORD_WEIGHT, ge=0, le=100)
    bm25_k1: float = Field(defaults.BM25_K1, ge=0)
    bm25_b: float = Field(defaults.BM25_B, ge=0, le=1)

    embed_batch_texts: int = Field(defaults.EMBED_BATCH_TEXTS, ge=1)
    embed_concurrency: int = Field(defaults.EMBED_CONCURRENCY, ge=1)
    embed_timeout_s: float = Field(defaults.EMBED_TIMEOUT_S, gt=0)
    embed_breaker: BreakerSettings = Field(default_factory=lambda: _embed_breaker())

    # The store's database (settings/shared.py; PostgreSQL with pgvector): pg.dsn empty
    # means the embedded server that `ragmesh serve postgres` runs under STATE_DIR/postgres.
    pg: PostgresSettings = Field(default_factory=PostgresSettings)

    hnsw_m: int = Field(defaults.HNSW_M, ge=2, le=100)
    hnsw_ef_construction: int = Field(defaults.HNSW_EF_CONSTRUCTION, ge=4, le=1000)
    hnsw_ef_search: int = Field(defaults.HNSW_EF_SEARCH, ge=1, le=1000)

    # The result cache (issue 11): TTL (0 turns it off) and bytes per replica; pgvector only.
    result_cache_ttl_s: float = Field(defaults.SEARCH_RESULT_CACHE_TTL_S, ge=0)
    result_cache_max_bytes: int = Field(defaults.SEARCH_RESULT_CACHE_MAX_BYTES, ge=0)

    # Where the Qdrant backend keeps its documents. Empty: Qdrant's own engine in-process
    # (qdrant-edge-py) under STATE_DIR/qdrant-edge, which one process holds at a time (`up`
    # refuses more than one search replica on it); "edge:DIR" the same engine in DIR;
    # ":memory:" or a directory: qdrant-client's pure-Python local mode; http(s)://HOST:PORT
    # a Qdrant server, which any number of replicas share (production).
    qdrant_location: str = defaults.QDRANT_LOCATION
    qdrant_prefer_grpc: bool = defaults.QDRANT_PREFER_GRPC
    # A file holding the API key of a Qdrant server that requires one (QDRANT__SERVICE__API_KEY;
    # deploy/kubernetes/components/qdrant); empty: none sent.
    qdrant_api_key_file: str = ""

    @model_validator(mode="before")
    @classmethod
    def _flat_names(cls, data: Any) -> Any:
        data = nest(data, "pg", "pg_", PostgresSettings())
        return nest(data, "embed_breaker", "embed_breaker_", _embed_breaker())

    @model_validator(mode="after")
    def _consistent(self) -> SearchSettings:
        if self.passage_overlap_tokens >= self.passage_max_tokens // 2:
            raise ValueError("passage_overlap_tokens must be less than half of passage_max_tokens")
        if self.default_top_k > self.max_top_k:
            raise ValueError("default_top_k must not exceed max_top_k")
        return self


def _embed_breaker() -> BreakerSettings:
    return BreakerSettings(
        failures=defaults.EMBED_BREAKER_FAILURES, recovery_s=defaults.EMBED_BREAKER_RECOVERY_S
    )
