"""Settings of the coordinator (`[coordinator]`, RAGMESH_COORDINATOR__*)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from ragmeshd import defaults
from ragmeshd.settings.core import Section
from ragmeshd.settings.shared import (
    BreakerSettings,
    PostgresSettings,
    coordinator_postgres,
    nest,
)


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
    # The backends' breakers; the flat breaker_recovery_s of before sets both recovery_s.
    local_breaker: BreakerSettings = Field(default_factory=lambda: _local_breaker())
    remote_breaker: BreakerSettings = Field(default_factory=lambda: _remote_breaker())
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
    search_breaker: BreakerSettings = Field(default_factory=lambda: _search_breaker())

    # The interactions database: the same PostgreSQL as search (own tables and migrations).
    # An empty pg.dsn means search's, or the embedded server when that is empty too.
    pg: PostgresSettings = Field(default_factory=coordinator_postgres)
    interaction_document_max_chars: int = Field(defaults.INTERACTION_DOCUMENT_MAX_CHARS, ge=100)
    export_page_size: int = Field(defaults.EXPORT_PAGE_SIZE, ge=1, le=10_000)
    # Interactions hold every user's questions: `ragmesh db purge-interactions` (run daily
    # from cron or a systemd timer) deletes those older than this many days; 0 keeps them.
    interactions_retention_days: int = Field(defaults.INTERACTIONS_RETENTION_DAYS, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _flat_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "breaker_recovery_s" in data:
            data = dict(data)
            recovery_s = data.pop("breaker_recovery_s")
            for side in ("local", "remote"):
                data.setdefault(f"{side}_breaker_recovery_s", recovery_s)
        data = nest(data, "pg", "pg_", coordinator_postgres())
        data = nest(data, "search_breaker", "search_breaker_", _search_breaker())
        data = nest(data, "local_breaker", "local_breaker_", _local_breaker())
        return nest(data, "remote_breaker", "remote_breaker_", _remote_breaker())

    @model_validator(mode="after")
    def _consistent_coordinator(self) -> CoordinatorSettings:
        if self.default_top_k > self.max_top_k:
            raise ValueError("default_top_k must not exceed max_top_k")
        if self.default_context_tokens > self.max_context_tokens:
            raise ValueError("default_context_tokens must not exceed max_context_tokens")
        if self.default_answer_tokens > self.max_answer_tokens:
            raise ValueError("default_answer_tokens must not exceed max_answer_tokens")
        return self


def _search_breaker() -> BreakerSettings:
    return BreakerSettings(
        failures=defaults.SEARCH_BREAKER_FAILURES, recovery_s=defaults.SEARCH_BREAKER_RECOVERY_S
    )


def _local_breaker() -> BreakerSettings:
    return BreakerSettings(
        failures=defaults.LOCAL_BREAKER_FAILURES, recovery_s=defaults.BACKEND_BREAKER_RECOVERY_S
    )


def _remote_breaker() -> BreakerSettings:
    return BreakerSettings(
        failures=defaults.REMOTE_BREAKER_FAILURES, recovery_s=defaults.BACKEND_BREAKER_RECOVERY_S
    )
