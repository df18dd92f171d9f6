"""The one settings object of a ragmesh process.

Values come, in order of precedence, from: keyword arguments (the CLI's flags), environment
variables with the prefix ``RAGMESH_`` (nested with ``__``, e.g.
``RAGMESH_EMBEDDINGS__MAX_BATCH_TEXTS=32``), the TOML file named by ``RAGMESH_CONFIG_FILE``,
and the defaults in services/defaults.py. Settings are validated when the process starts;
nothing else in ragmesh reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from services import defaults
from services.profiles import (
    DEFAULT_PROFILE,
    PROFILES,
    Profile,
    production_problems,
    profile_defaults,
)


class _Section(BaseModel):
    """A settings section: an unknown key is a typo, refused at start."""

    model_config = ConfigDict(extra="forbid")


class EmbeddingsSettings(_Section):
    """The embeddings server."""

    listen: str = defaults.EMBEDDINGS_LISTEN
    # Prometheus /metrics on loopback; empty turns it off.
    metrics_listen: str = defaults.EMBEDDINGS_METRICS_LISTEN
    # A local sentence-transformers model directory; empty means the packaged all-MiniLM-L6-v2.
    model_path: str = ""
    device: Literal["auto", "cpu", "cuda"] = defaults.DEVICE
    max_client_batch: int = Field(defaults.MAX_CLIENT_BATCH, ge=1, le=4096)
    max_input_chars: int = Field(defaults.MAX_INPUT_CHARS, ge=1)
    max_batch_texts: int = Field(defaults.MAX_BATCH_TEXTS, ge=1, le=4096)
    max_batch_delay_ms: float = Field(defaults.MAX_BATCH_DELAY_MS, ge=0)
    slice_overhead_tokens: float = Field(defaults.SLICE_OVERHEAD_TOKENS, ge=0)
    max_queue_texts: int = Field(defaults.MAX_QUEUE_TEXTS, ge=1)
    # Load shedding (issue 9): a call whose texts would wait longer than this for the model
    # (queued texts / measured throughput) is refused at once with RESOURCE_EXHAUSTED.
    max_queue_wait_ms: float = Field(defaults.MAX_QUEUE_WAIT_MS, gt=0)
    # Load shedding in Envoy: calls Envoy sends one replica at once (its circuit breaker);
    # past it Envoy refuses at once with UNAVAILABLE, before the server spends CPU on them.
    envoy_max_requests: int = Field(defaults.EMBEDDINGS_ENVOY_MAX_REQUESTS, ge=1)
    # Messages one EmbedStream may send; past this it ends with RESOURCE_EXHAUSTED.
    max_stream_messages: int = Field(defaults.MAX_STREAM_MESSAGES, ge=1)
    model_load_attempts: int = Field(defaults.MODEL_LOAD_ATTEMPTS, ge=1)
    model_load_backoff_base_s: float = Field(defaults.MODEL_LOAD_BACKOFF_BASE_S, ge=0)
    # -- runtime and caching (issue 11; defaults.py explains) --
    runtime: Literal["auto", "torch", "onnx", "openvino"] = defaults.EMBEDDINGS_RUNTIME
    # Where converted models are kept; empty means STATE_DIR/models.
    runtime_cache_dir: str = ""
    # The in-memory vector cache of each replica, in bytes; 0 turns it off.
    cache_max_bytes: int = Field(defaults.EMBEDDINGS_CACHE_MAX_BYTES, ge=0)
    # A shared cache tier, e.g. redis://127.0.0.1:6379/0; empty means none.
    cache_redis_url: str = ""
    cache_redis_ttl_s: int = Field(defaults.EMBEDDINGS_CACHE_REDIS_TTL_S, ge=1)
    # A batch the model process has not answered after this long is hung: the process is
    # killed and replaced (self-healing, issue 9).
    model_batch_timeout_s: float = Field(defaults.MODEL_BATCH_TIMEOUT_S, gt=0)


class SearchSettings(_Section):
    """The search server: request limits, passages, ranking, the embeddings client and the
    document store (PostgreSQL + pgvector, embedded unless `pg_dsn` is set, or Qdrant)."""

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
    embed_breaker_failures: int = Field(defaults.EMBED_BREAKER_FAILURES, ge=1)
    embed_breaker_recovery_s: float = Field(defaults.EMBED_BREAKER_RECOVERY_S, gt=0)

    # An external PostgreSQL (with pgvector) as a libpq URI; empty means the embedded server
    # that `ragmesh serve postgres` runs under STATE_DIR/postgres.
    pg_dsn: str = ""
    pg_pool_min_size: int = Field(defaults.PG_POOL_MIN_SIZE, ge=0)
    pg_pool_max_size: int = Field(defaults.PG_POOL_MAX_SIZE, ge=1)
    pg_statement_timeout_ms: int = Field(defaults.PG_STATEMENT_TIMEOUT_MS, ge=0)
    pg_connect_attempts: int = Field(defaults.PG_CONNECT_ATTEMPTS, ge=1)
    pg_connect_backoff_base_s: float = Field(defaults.PG_CONNECT_BACKOFF_BASE_S, ge=0)
    pg_health_interval_s: float = Field(defaults.PG_HEALTH_INTERVAL_S, gt=0)
    pg_health_timeout_s: float = Field(defaults.PG_HEALTH_TIMEOUT_S, gt=0)

    hnsw_m: int = Field(defaults.HNSW_M, ge=2, le=100)
    hnsw_ef_construction: int = Field(defaults.HNSW_EF_CONSTRUCTION, ge=4, le=1000)
    hnsw_ef_search: int = Field(defaults.HNSW_EF_SEARCH, ge=1, le=1000)

    # The result cache (issue 11): TTL (0 turns it off) and bytes per replica; pgvector only.
    result_cache_ttl_s: float = Field(defaults.SEARCH_RESULT_CACHE_TTL_S, ge=0)
    result_cache_max_bytes: int = Field(defaults.SEARCH_RESULT_CACHE_MAX_BYTES, ge=0)

    qdrant_location: str = defaults.QDRANT_LOCATION
    qdrant_prefer_grpc: bool = defaults.QDRANT_PREFER_GRPC

    @model_validator(mode="after")
    def _consistent(self) -> SearchSettings:
        if self.pg_pool_min_size > self.pg_pool_max_size:
            raise ValueError("pg_pool_min_size must not exceed pg_pool_max_size")
        if self.passage_overlap_tokens >= self.passage_max_tokens // 2:
            raise ValueError("passage_overlap_tokens must be less than half of passage_max_tokens")
        if self.default_top_k > self.max_top_k:
            raise ValueError("default_top_k must not exceed max_top_k")
        return self


class CoordinatorSettings(_Section):
    """The coordinator server: request limits, routing between the local and remote
    language-model backends, the search client and the interactions database."""

    listen: str = defaults.COORDINATOR_LISTEN
    # Prometheus /metrics on loopback; empty turns it off.
    metrics_listen: str = defaults.COORDINATOR_METRICS_LISTEN
    # Where Search calls go: the search server, or Envoy in front of it.
    search_target: str = defaults.SEARCH_LISTEN
    # The collections searched when a request names none; empty means every collection.
    default_collections: list[str] = []
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


class MeshSettings(_Section):
    """Envoy, certificates and `ragmesh up`."""

    # When true, every server requires a client certificate signed by the mesh CA on its port
    # and calls other services with its own certificate; `ragmesh up` turns it on.
    tls: bool = False
    # Envoy's listener for clients: the only address meant to be reachable from other hosts.
    client_listen: str = defaults.ENVOY_CLIENT_LISTEN
    # Envoy's listener for service-to-service calls, loopback only.
    internal_listen: str = defaults.ENVOY_INTERNAL_LISTEN
    # Envoy's admin interface (/stats, /stats/prometheus, /clusters), loopback only.
    admin_listen: str = defaults.ENVOY_ADMIN_LISTEN
    # Replica i of a service listens on its base port + i * replica_port_step.
    replica_port_step: int = Field(defaults.REPLICA_PORT_STEP, ge=1)
    # How long a stopping server under `up` stays NOT_SERVING before it stops taking calls,
    # so Envoy's health checks (1 s interval, 2 failures) have taken it out of rotation.
    drain_s: float = Field(defaults.MESH_DRAIN_S, ge=0)
    # Self-healing: restarting children that exit without being asked (defaults.py explains).
    restart_first_delay_s: float = Field(defaults.RESTART_FIRST_DELAY_S, ge=0)
    restart_max_delay_s: float = Field(defaults.RESTART_MAX_DELAY_S, ge=0)
    restart_reset_after_s: float = Field(defaults.RESTART_RESET_AFTER_S, gt=0)
    crash_loop_exits: int = Field(defaults.CRASH_LOOP_EXITS, ge=1)
    crash_loop_window_s: float = Field(defaults.CRASH_LOOP_WINDOW_S, gt=0)
    # Security (issue 10): the CA private key is encrypted at rest. Its passphrase comes from
    # the environment variable named here when that is set, else from this file, which gets a
    # random passphrase on first use. The file lies outside the state folder, so a copy of
    # the state folder (a backup, an image) carries no usable CA key; only `ragmesh up` and
    # `ragmesh certs` read it, and `up` drops the variable before it starts any service.
    ca_passphrase_env: str = Field(defaults.CA_PASSPHRASE_ENV, pattern=r"^[A-Z_][A-Z0-9_]*$")
    ca_passphrase_file: str = defaults.CA_PASSPHRASE_FILE


# --- the OpenAI-compatible HTTP adapter (services/openai_compat) ---------------------------


class OpenAISettings(_Section):
    """The OpenAI-compatible HTTP adapter behind Envoy (/v1/embeddings, /v1/models,
    /v1/chat/completions)."""

    listen: str = defaults.OPENAI_LISTEN
    # Where its gRPC calls go: Envoy's internal listener under `up`, or the servers directly.
    embeddings_target: str = defaults.EMBEDDINGS_LISTEN
    coordinator_target: str = defaults.COORDINATOR_LISTEN
    embed_timeout_s: float = Field(defaults.OPENAI_EMBED_TIMEOUT_S, gt=0)
    ask_timeout_s: float = Field(defaults.OPENAI_ASK_TIMEOUT_S, gt=0)
    # --- Kubernetes (issue 14) ---
    # A plaintext port answering only GET /healthz (503 while draining) and GET /livez: the
    # kubelet's httpGet probes present no client certificate. Empty turns it off.
    health_listen: str = ""


class RateLimitSettings(_Section):
    """Envoy's rate-limit service (`ragmesh serve ratelimit`, services/ratelimit)."""

    # Empty: a unix socket in STATE_DIR/run, for the Envoy on this host (`ragmesh up`).
    # host:port (Kubernetes: the Envoy pods call it over the network): mutual TLS when
    # mesh.tls, and only Envoy's client certificate is admitted.
    listen: str = ""


# --- Kubernetes (issue 14): certificates issued outside ragmesh ---------------------------
class MountedCertificatesSettings(_Section):
    """Certificates that an outside issuer writes and renews (cert-manager Secrets mounted as
    directories holding tls.crt, tls.key and ca.crt). Empty: the mesh's own certificates under
    STATE_DIR/certs, as `ragmesh up` makes them."""

    # This server's certificate (its port's TLS) and the client certificate it presents when
    # it calls other services through Envoy.
    server_dir: str = ""
    client_dir: str = ""


class ServerSettings(_Section):
    """What every gRPC server process shares."""

    default_deadline_s: float = Field(defaults.DEFAULT_DEADLINE_S, gt=0)
    shutdown_drain_s: float = Field(defaults.SHUTDOWN_DRAIN_S, ge=0)
    shutdown_grace_s: float = Field(defaults.SHUTDOWN_GRACE_S, ge=0)
    max_message_bytes: int = Field(defaults.MAX_MESSAGE_BYTES, ge=1024)
    # Load shedding (issue 9): calls in progress at once (streams included, health checks
    # not); the next is refused at once with RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = Field(defaults.MAX_CONCURRENT_RPCS, ge=1)
    # Every RPC but health checks needs an API key (STATE_DIR/keys). Turning this off
    # is for a server on a private loopback port only.
    require_api_key: bool = True
    # --- Kubernetes (issue 14) ---
    # A second, plaintext port that serves grpc.health.v1 only (no API, no keys): kubelet's
    # gRPC probes speak no TLS. Empty turns it off (`ragmesh up` needs none).
    health_listen: str = ""


class TelemetrySettings(_Section):
    """OpenTelemetry traces, exported with OTLP over gRPC."""

    # The collector, e.g. "127.0.0.1:4317" or "http://127.0.0.1:4317" (Jaeger takes OTLP on
    # 4317), reached in plaintext: run it (or an OpenTelemetry Collector that forwards) on
    # this host. Empty means no tracing. When unset here, the standard
    # OTEL_EXPORTER_OTLP_ENDPOINT variable is used.
    otlp_endpoint: str = ""
    # The share of new traces recorded: 1.0 for development, 0.01 suggested for production.
    # Calls that arrive inside a sampled trace are recorded whatever the ratio.
    sampling_ratio: float = Field(defaults.TRACE_SAMPLING_RATIO, ge=0, le=1)
    export_delay_ms: int = Field(defaults.TRACE_EXPORT_DELAY_MS, ge=1)
    export_timeout_s: float = Field(defaults.TRACE_EXPORT_TIMEOUT_S, gt=0)
    max_queue_spans: int = Field(defaults.TRACE_MAX_QUEUE_SPANS, ge=1)

    @field_validator("otlp_endpoint")
    @classmethod
    def _plain_endpoint(cls, value: str) -> str:
        if value.strip():
            parse_otlp_endpoint(value)
        return value.strip()

    @property
    def otlp_address(self) -> tuple[str, int] | None:
        """The collector as (host, port), or None when tracing is off."""
        return parse_otlp_endpoint(self.otlp_endpoint) if self.otlp_endpoint else None


def parse_otlp_endpoint(value: str) -> tuple[str, int]:
    """The collector's (host, port) from `host:port` or `http://host:port`; anything else
    (TLS, a path, no port) is refused."""
    scheme, _, rest = value.strip().rpartition("://")
    if scheme not in ("", "http"):
        raise ValueError(
            f"OTLP endpoint {value!r}: only plaintext collectors (http:// or host:port) are"
            " supported; run the collector, or one that forwards, on this host"
        )
    rest = rest.removesuffix("/")
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or "/" in rest or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"OTLP endpoint {value!r} must be host:port, e.g. 127.0.0.1:4317")
    return host, int(port)


class Settings(BaseSettings):
    """All of ragmesh's settings; each process builds exactly one."""

    model_config = SettingsConfigDict(
        env_prefix="RAGMESH_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    # The profile whose defaults apply (services/profiles.py): RAGMESH_PROFILE or the file's
    # `profile` key.
    profile: Profile = DEFAULT_PROFILE
    state_dir: Path = Path(defaults.STATE_DIR)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    server: ServerSettings = ServerSettings()
    embeddings: EmbeddingsSettings = EmbeddingsSettings()
    search: SearchSettings = SearchSettings()
    coordinator: CoordinatorSettings = CoordinatorSettings()
    mesh: MeshSettings = MeshSettings()
    openai: OpenAISettings = OpenAISettings()
    ratelimit: RateLimitSettings = RateLimitSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    mounted_certs: MountedCertificatesSettings = MountedCertificatesSettings()
    # The standard OpenTelemetry variable, read here so that this object stays the only reader
    # of the environment; it fills telemetry.otlp_endpoint when that is unset.
    otel_exporter_otlp_endpoint: str = Field(
        "", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"), exclude=True, repr=False
    )
    # libpq's standard variables, which the PostgreSQL client (asyncpg) reads for a DSN that
    # names no sslmode / sslrootcert (Kubernetes: CloudNativePG's URI names neither). Read here
    # too so that the production profile can tell whether a remote database is verified.
    pgsslmode: str = Field("", validation_alias=AliasChoices("PGSSLMODE"), exclude=True)
    pgsslrootcert: str = Field("", validation_alias=AliasChoices("PGSSLROOTCERT"), exclude=True)

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def models_dir(self) -> Path:
        """Where converted embedding models are kept: the setting, else the state folder's."""
        return Path(self.embeddings.runtime_cache_dir or self.state_dir / "models")

    @model_validator(mode="after")
    def _standard_otlp_endpoint(self) -> Settings:
        if self.otel_exporter_otlp_endpoint.strip() and not self.telemetry.otlp_endpoint:
            self.telemetry = TelemetrySettings.model_validate(
                {**self.telemetry.model_dump(), "otlp_endpoint": self.otel_exporter_otlp_endpoint}
            )
        return self

    @model_validator(mode="after")
    def _profile_rules(self) -> Settings:
        if self.profile == "production":
            problems = production_problems(
                self.model_dump(),
                libpq_env={"PGSSLMODE": self.pgsslmode, "PGSSLROOTCERT": self.pgsslrootcert},
            )
            if problems:
                raise ValueError("\n".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RAGMESH_CONFIG_FILE")
        file_source = None
        if config_file:
            file_source = TomlConfigSettingsSource(settings_cls, toml_file=config_file)
            sources.append(file_source)
        sources.append(ProfileSource(settings_cls, file_source))
        return tuple(sources)


class ProfileSource(PydanticBaseSettingsSource):
    """The chosen profile's defaults, below every other source (services/profiles.py). The
    profile is RAGMESH_PROFILE, else the config file's `profile`, else dev."""

    def __init__(
        self, settings_cls: type[BaseSettings], file_source: PydanticBaseSettingsSource | None
    ) -> None:
        super().__init__(settings_cls)
        self._file_source = file_source

    def chosen(self) -> str:
        from_file = self._file_source().get("profile") if self._file_source else None
        return os.environ.get("RAGMESH_PROFILE") or from_file or DEFAULT_PROFILE

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole dict comes from __call__

    def __call__(self) -> dict[str, Any]:
        chosen = self.chosen()
        # An unknown name is left to the `profile` field's validation, which names the choices.
        return profile_defaults(chosen) if chosen in PROFILES else {}


def load_settings(**overrides: object) -> Settings:
    """Build and validate the process's settings; overrides are the CLI's flags."""
    return Settings(**overrides)  # type: ignore[arg-type]


def config_file_path() -> Path | None:
    """The TOML file named by RAGMESH_CONFIG_FILE, if any, for the few settings a running
    process re-reads (the coordinator's confidence threshold)."""
    value = os.environ.get("RAGMESH_CONFIG_FILE")
    return Path(value) if value else None


def environment_secret(name: str, *, forget: bool = False) -> str | None:
    """The value of the environment variable `name` (a secret named in the settings, such as
    the CA passphrase), removed from this process's environment when `forget`, so that the
    processes it starts do not inherit it."""
    value = os.environ.pop(name, None) if forget else os.environ.get(name)
    return value or None
