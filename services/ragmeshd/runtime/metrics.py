"""Prometheus metrics: every metric ragmesh exports is defined here, by the process that
serves it, and served on `/metrics` at the process's loopback `metrics_listen` address."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_log = logging.getLogger("ragmesh.metrics")

# Latency buckets from 1 ms to 60 s: embeddings answer in milliseconds, Ask in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Every gRPC server (the names and labels of go-grpc-prometheus, so existing dashboards work).
GRPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's start to its end on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)

# Embeddings.
BATCH_SIZE = Histogram(
    "ragmesh_embeddings_batch_size",
    "Texts per model batch.",
    buckets=(1, 2, 4, 8, 16, 32, 48, 64, 128, 256),
)
QUEUE_DEPTH = Gauge("ragmesh_embeddings_queue_depth", "Texts waiting for the model.")
QUEUE_SECONDS = Histogram(
    "ragmesh_embeddings_queue_seconds",
    "Time a text waits in the queue before its batch starts.",
    buckets=LATENCY_BUCKETS,
)
MODEL_LOAD_SECONDS = Gauge(
    "ragmesh_embeddings_model_load_seconds", "How long the model took to load."
)

# Search.
BACKEND_QUERY_SECONDS = Histogram(
    "ragmesh_search_backend_query_seconds",
    "Time of one query against the document store, by search mode.",
    ["mode"],
    buckets=LATENCY_BUCKETS,
)
POOL_SIZE = Gauge("ragmesh_search_pool_connections", "Connections in the database pool.")
POOL_IN_USE = Gauge("ragmesh_search_pool_connections_in_use", "Pool connections in use.")

# Coordinator and every client of another service.
ROUTING_DECISIONS = Counter(
    "ragmesh_coordinator_routing_decisions_total", "Where Ask answers were sent.", ["side"]
)
LLM_BACKEND_SECONDS = Histogram(
    "ragmesh_coordinator_backend_seconds",
    "Time of one language-model backend call, by side and outcome.",
    ["side", "outcome"],
    buckets=LATENCY_BUCKETS,
)
BREAKER_STATE = Gauge(
    "ragmesh_circuit_breaker_state",
    "Circuit breaker state by dependency: 0 closed, 1 half-open, 2 open.",
    ["dependency"],
)
BREAKER_FAILURES = Counter(
    "ragmesh_circuit_breaker_failures_total",
    "Failed calls counted by a circuit breaker, by dependency.",
    ["dependency"],
)


def serve_metrics(listen: str) -> None:
    """Serve /metrics on `listen` (host:port, loopback); an empty address turns it off."""
    if not listen:
        return
    host, _, port = listen.rpartition(":")
    try:
        start_http_server(int(port), addr=host.strip("[]"))
    except OSError as exc:
        raise OSError(
            f"cannot serve metrics on {listen}: {exc} (set the service's metrics_listen,"
            " e.g. RAGMESH_EMBEDDINGS__METRICS_LISTEN, to a free port or to empty)"
        ) from exc
    _log.info("metrics", extra={"listen": listen, "path": "/metrics"})


# Caches (ragmeshd/caching): the embeddings vector cache ("embeddings"), its shared Redis
# tier ("embeddings_redis") and search's result cache ("search_results").
CACHE_HITS = Counter("ragmesh_cache_hits_total", "Lookups answered by a cache.", ["cache"])
CACHE_MISSES = Counter("ragmesh_cache_misses_total", "Lookups a cache could not answer.", ["cache"])
CACHE_EVICTIONS = Counter(
    "ragmesh_cache_evictions_total", "Entries pushed out of a cache by its size bound.", ["cache"]
)
CACHE_BYTES = Gauge("ragmesh_cache_bytes", "Bytes held by an in-memory cache.", ["cache"])
CACHE_ENTRIES = Gauge("ragmesh_cache_entries", "Entries held by an in-memory cache.", ["cache"])
CACHE_ERRORS = Counter(
    "ragmesh_cache_errors_total", "Failed calls to a shared cache tier (then skipped).", ["cache"]
)

# The llm service (ragmeshd/llm): llama.cpp generates one request at a time.
LLM_TIME_TO_FIRST_TOKEN_SECONDS = Histogram(
    "ragmesh_llm_time_to_first_token_seconds",
    "Time from the start of a generation (after the queue) to its first token: reading the prompt.",
    buckets=LATENCY_BUCKETS,
)
LLM_TOKENS_PER_SECOND = Histogram(
    "ragmesh_llm_tokens_per_second",
    "Generation speed of one request, first token to last.",
    buckets=(5, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 400),
)
LLM_QUEUE_LENGTH = Gauge(
    "ragmesh_llm_queue_length", "Requests waiting for the model while it generates another."
)
LLM_QUEUE_SECONDS = Histogram(
    "ragmesh_llm_queue_seconds",
    "Time a request waits for the model before its generation starts.",
    buckets=LATENCY_BUCKETS,
)
LLM_PROMPT_TOKENS = Counter("ragmesh_llm_prompt_tokens_total", "Prompt tokens read.")
LLM_COMPLETION_TOKENS = Counter(
    "ragmesh_llm_completion_tokens_total", "Tokens generated (the warm-up excluded)."
)
