"""Settings of the coordinator (`[coordinator]`, RAGMESH_COORDINATOR__*)."""

from __future__ import annotations

from pydantic import Field, model_validator

from ragmeshd import defaults
from ragmeshd.settings.core import Section


class CoordinatorSettings(Section):
    """The coordinator server: request limits, routing between the local and remote
    language-model backends, the search client and the interactions database."""

    listen: str = defaults.COORDINATOR_LISTEN
    # Prometheus /metrics on loopback; empty turns it off.
    metrics_listen: str = defaults.COORDINATOR_METRICS_LISTEN
    # Where Search calls go: the search server, or Envoy in front of it.
    search_target: str = defaults.SEARCH_LISTEN
    # The collections searched when a request names none; empty means every collection.
    default_collections: list[str] = Field(default_factory=list)
    interactions_collection: str = Field(
        defaults.INTERACTIONS_COLLECTION, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$"
    )
    # Security (issue 10): the interactions collection holds users' +1 rated questions and
    # answers, so a request that names no collection searches it only when this is true (or
    # default_collections names it); otherwise one user's text could reach every prompt.
    search_interactions_by_default: bool = False
    # The embedding model directory whose tokenizer counts context tokens; empty means the
    # embeddings section's model_path, or the packaged all-MiniLM-L6-v2 when that is empty
    # too (the model the search service splits passages for).
    tokenizer_path: str = ""

    # The language-model backends: OpenAI-compatible APIs by base URL (the part before
    # /chat/completions, e.g. http://127.0.0.1:8080/v1), the model name to ask for, and a
    # file holding the API key (sent as a bearer token). An empty URL means no such backend.
    local_url: str = ""
    local_model: str = ""
    local_api_key_file: str = ""
    remote_url: str = ""
    remote_model: str = ""
    remote_api_key_file: str = ""

    # The mesh's llm service (`ragmesh serve llm`) as the LOCAL backend: its address (Envoy's
    # internal listener under `ragmesh up`). When set, local_url is not used.
    llm_target: str = ""

    # Routing. The threshold is re-read from the config file while the server runs.
    confidence_threshold: float = Field(defaults.CONFIDENCE_THRESHOLD, ge=0, le=1)
    config_check_interval_s: float = Field(defaults.CONFIG_CHECK_INTERVAL_S, gt=0)
    health_cache_s: float = Field(defaults.BACKEND_HEALTH_CACHE_S, ge=0)
    health_timeout_s: float = Field(defaults.BACKEND_HEALTH_TIMEOUT_S, gt=0)
    backend_connect_timeout_s: float = Field(defaults.BACKEND_CONNECT_TIMEOUT_S, gt=0)
    backend_idle_timeout_s: float = Field(defaults.BACKEND_IDLE_TIMEOUT_S, gt=0)
    backend_deadline_s: float = Field(defaults.BACKEND_DEADLINE_S, gt=0)
    local_breaker_failures: int = Field(defaults.LOCAL_BREAKER_FAILURES, ge=1)
    remote_breaker_failures: int = Field(defaults.REMOTE_BREAKER_FAILURES, ge=1)
    breaker_recovery_s: float = Field(defaults.BACKEND_BREAKER_RECOVERY_S, gt=0)
    answer_temperature: float = Field(defaults.ANSWER_TEMPERATURE, ge=0, le=2)

    # Request limits.
    max_query_chars: int = Field(defaults.COORDINATOR_MAX_QUERY_CHARS, ge=1)
    max_collections: int = Field(defaults.COORDINATOR_MAX_COLLECTIONS, ge=1)
    default_top_k: int = Field(defaults.COORDINATOR_DEFAULT_TOP_K, ge=1)
    max_top_k: int = Field(defaults.COORDINATOR_MAX_TOP_K, ge=1, le=100)
    default_context_tokens: int = Field(defaults.DEFAULT_CONTEXT_TOKENS, ge=1)
    max_context_tokens: int = Field(defaults.MAX_CONTEXT_TOKENS, ge=1)
    min_partial_passage_tokens: int = Field(defaults.MIN_PARTIAL_PASSAGE_TOKENS, ge=1)
    default_answer_tokens: int = Field(defaults.DEFAULT_ANSWER_TOKENS, ge=1)
    max_answer_tokens: int = Field(defaults.MAX_ANSWER_TOKENS, ge=1)
    max_outcome_chars: int = Field(defaults.MAX_OUTCOME_CHARS, ge=1)
    max_export_interactions: int = Field(defaults.MAX_EXPORT_INTERACTIONS, ge=1)

    # Calling the search service.
    search_timeout_s: float = Field(defaults.SEARCH_TIMEOUT_S, gt=0)
    search_breaker_failures: int = Field(defaults.SEARCH_BREAKER_FAILURES, ge=1)
    search_breaker_recovery_s: float = Field(defaults.SEARCH_BREAKER_RECOVERY_S, gt=0)

    # The interactions database: the same PostgreSQL as search (own tables and migrations).
    # Empty means search's pg_dsn, or the embedded server when that is empty too.
    pg_dsn: str = ""
    pg_pool_min_size: int = Field(defaults.COORDINATOR_PG_POOL_MIN_SIZE, ge=0)
    pg_pool_max_size: int = Field(defaults.COORDINATOR_PG_POOL_MAX_SIZE, ge=1)
    pg_statement_timeout_ms: int = Field(defaults.COORDINATOR_PG_STATEMENT_TIMEOUT_MS, ge=0)
    pg_connect_attempts: int = Field(defaults.COORDINATOR_PG_CONNECT_ATTEMPTS, ge=1)
    pg_connect_backoff_base_s: float = Field(defaults.COORDINATOR_PG_CONNECT_BACKOFF_BASE_S, ge=0)
    pg_health_interval_s: float = Field(defaults.COORDINATOR_PG_HEALTH_INTERVAL_S, gt=0)
    pg_health_timeout_s: float = Field(defaults.COORDINATOR_PG_HEALTH_TIMEOUT_S, gt=0)
    interaction_document_max_chars: int = Field(defaults.INTERACTION_DOCUMENT_MAX_CHARS, ge=100)
    export_page_size: int = Field(defaults.EXPORT_PAGE_SIZE, ge=1, le=10_000)

    @model_validator(mode="after")
    def _consistent_coordinator(self) -> CoordinatorSettings:
        if self.default_top_k > self.max_top_k:
            raise ValueError("default_top_k must not exceed max_top_k")
        if self.default_context_tokens > self.max_context_tokens:
            raise ValueError("default_context_tokens must not exceed max_context_tokens")
        if self.default_answer_tokens > self.max_answer_tokens:
            raise ValueError("default_answer_tokens must not exceed max_answer_tokens")
        if self.pg_pool_min_size > self.pg_pool_max_size:
            raise ValueError("pg_pool_min_size must not exceed pg_pool_max_size")
        return self
