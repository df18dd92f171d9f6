"""Every tunable's default, in one place.

Settings (ragmeshd/settings/) read these; nothing else hard-codes a limit.
"""

from typing import Literal

# Where ragmesh keeps certificates, keys, the embedded database and logs.
STATE_DIR = ".ragmesh"

# Embeddings: request limits.
MAX_CLIENT_BATCH = 32
MAX_INPUT_CHARS = 10_000

# Embeddings: server-side dynamic batching.
MAX_BATCH_TEXTS = 64
MAX_BATCH_DELAY_MS = 5
# Bulk writes' texts (issue 21) run in batches of about this many characters: ~250-350 tokens,
# ~50 ms of all-MiniLM-L6-v2 on 2 CPU cores, the longest an interactive call arriving meanwhile
# waits for the model; interactive texts never share a batch with bulk ones. `ragmesh bench
# ingest` (docs/benchmarks.md): 2000 chars gave single-text Embed p99 196 ms during an ingest
# (idle 25 ms), 1000 chars 106 ms (idle 26 ms) at the same passages/s.
BULK_BATCH_CHARS = 1000
# A batch runs as length-sorted slices chosen to minimise padded tokens plus this fixed cost
# per forward pass, in tokens: ~4.6 ms per pass vs ~0.14 ms per token on a 2-core CPU for
# all-MiniLM-L6-v2 (docs/benchmarks.md). On a GPU, where a pass is cheap next to padding
# being free, raise it (e.g. 10000) to run each batch as one slice.
SLICE_OVERHEAD_TOKENS = 32.0
# Texts waiting for the model; past this a call is refused with RESOURCE_EXHAUSTED.
MAX_QUEUE_TEXTS = 4096
# Load shedding: texts that would wait longer than this for the model (at its measured
# throughput) are refused at once with RESOURCE_EXHAUSTED, so accepted calls stay fast under
# overload (docs/benchmarks.md, bench overload).
MAX_QUEUE_WAIT_MS = 500.0
# Load shedding in Envoy, before a call costs Python any CPU: the calls Envoy lets one
# embeddings replica hold at once (its circuit breaker's max_requests); the next is refused
# by Envoy at once with UNAVAILABLE (response flag UO). Sized from a replica's capacity: at
# ~230 single-text calls/s on 2 idle cores, 64 in flight wait ~0.3 s, inside
# MAX_QUEUE_WAIT_MS, so Envoy, not the server, refuses the excess (docs/benchmarks.md,
# bench overload); and no fewer than the 64 callers `ragmesh bench embed --mesh` sends one
# replica. The other services keep ragmeshd/envoy/limits.py's 512.
EMBEDDINGS_ENVOY_MAX_REQUESTS = 64
# Messages one EmbedStream may send (its duration is capped by Envoy: envoy/limits.py).
MAX_STREAM_MESSAGES = 10_000

# Embeddings: model loading, retried with exponential backoff.
MODEL_LOAD_ATTEMPTS = 3
MODEL_LOAD_BACKOFF_BASE_S = 5.0
DEVICE: Literal["auto", "cpu", "cuda"] = "auto"

# gRPC serving.
EMBEDDINGS_LISTEN = "127.0.0.1:50051"
SEARCH_LISTEN = "127.0.0.1:50052"
COORDINATOR_LISTEN = "127.0.0.1:50053"
# Prometheus /metrics of each service (replica i adds i * the mesh's replica port step).
EMBEDDINGS_METRICS_LISTEN = "127.0.0.1:9464"
SEARCH_METRICS_LISTEN = "127.0.0.1:9465"
COORDINATOR_METRICS_LISTEN = "127.0.0.1:9466"
# Deadline applied to a call whose client set none.
DEFAULT_DEADLINE_S = 30.0
# How long a stopping server stays up NOT_SERVING so the proxy stops sending it work.
SHUTDOWN_DRAIN_S = 0.0
# How long in-flight calls may run after the server stops accepting new ones.
SHUTDOWN_GRACE_S = 10.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Load shedding: calls one server process takes at once; past it RESOURCE_EXHAUSTED at once.
# Envoy's circuit breakers allow 512 per replica of search and the coordinator
# (ragmeshd/envoy/limits.py), so those servers, which can say why, refuse first;
# embeddings is capped lower in Envoy (EMBEDDINGS_ENVOY_MAX_REQUESTS).
MAX_CONCURRENT_RPCS = 256

# Search: which store holds the documents.
SEARCH_BACKEND: Literal["pgvector", "qdrant"] = "pgvector"

# Search: request limits (documented in protos/ragmesh/search/v1/search_service.proto).
MAX_DOCUMENTS_PER_UPSERT = 256
MAX_IDS_PER_DELETE = 1000
MAX_DOCUMENT_ID_CHARS = 256
MAX_DOCUMENT_CHARS = 100_000
MAX_METADATA_KEYS = 32
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_STRING_CHARS = 1024
MAX_TOP_K = 100
DEFAULT_TOP_K = 10
MAX_QUERY_CHARS = 2000
MAX_FILTER_CONDITIONS = 16
MAX_FILTER_VALUES = 64
MAX_VECTOR_DIMENSIONS = 2000

# Documents in (issue 21, docs/ingest.md): a file larger than DOCUMENT_MAX_BYTES is skipped as
# "too large" before it is read, and an upload larger is refused; one whose text is longer
# than DOCUMENT_MAX_TEXT_CHARS (about 1,000 book pages, 4,000-16,000 passages: still one
# write within MAX_MESSAGE_BYTES, so a document's passages are replaced atomically) too.
DOCUMENT_MAX_BYTES = 64 * 1024 * 1024
DOCUMENT_MAX_TEXT_CHARS = 4_000_000
# A document sent as passages (Document.passages) holds at most this many.
MAX_PASSAGES_PER_DOCUMENT = 20_000
# ListDocuments: documents a page.
DEFAULT_LIST_PAGE_SIZE = 100
MAX_LIST_PAGE_SIZE = 1000
# Source, title and section strings (Document.source, .title, PassageInput.section).
MAX_SOURCE_CHARS = 1024
# UploadFiles: the bytes of one call's files together (search.upload_max_bytes); each
# stream message holds a piece (a gRPC message is at most MAX_MESSAGE_BYTES).
UPLOAD_MAX_BYTES = 64 * 1024 * 1024

# Search: splitting documents into passages. all-MiniLM-L6-v2's window is 256 tokens, two
# of which are [CLS] and [SEP]; consecutive passages share PASSAGE_OVERLAP_TOKENS tokens.
PASSAGE_MAX_TOKENS = 254
PASSAGE_OVERLAP_TOKENS = 32
# A passage is also cut at this many characters (the embeddings service's input limit is
# MAX_INPUT_CHARS; a few very long "words" are one token each).
PASSAGE_MAX_CHARS = 8000

# Search: each mode ranks CANDIDATE_MULTIPLIER * top_k passages (hits are one per document),
# HYBRID at least HYBRID_MIN_CANDIDATES: fusion normalises each ranking over what it sees.
CANDIDATE_MULTIPLIER = 3
HYBRID_MIN_CANDIDATES = 100
# Reciprocal rank fusion: score = weight / (RRF_K + rank), summed over the modes.
RRF_K = 60
RRF_DENSE_WEIGHT = 1.0
RRF_KEYWORD_WEIGHT = 1.0
# HYBRID's default fusion (issue 12): "rrf", "min_max" or "distribution" (score fusion, with
# SCORE_FUSION_*_WEIGHT). Chosen on SciFact's training split only, offline with the service's
# fusion code (python -m ragmeshd.evaluation.fusion_study): min-max 0.4/0.6 gave nDCG@10 0.7330,
# RRF k=60 1/1 0.7095, the best single mode 0.6951 (docs/benchmarks.md).
FUSION_METHOD: Literal["rrf", "min_max", "distribution"] = "min_max"
SCORE_FUSION_DENSE_WEIGHT = 0.4
SCORE_FUSION_KEYWORD_WEIGHT = 0.6
# BM25 parameters of keyword relevance (both backends; terms from ragmeshd/search/keywords.py).
BM25_K1 = 1.2
BM25_B = 0.75

# Search: calling the embeddings service (once per call: Envoy is the one retry layer).
EMBED_BATCH_TEXTS = 32
EMBED_CONCURRENCY = 4
EMBED_TIMEOUT_S = 30.0
# The breaker opens after this many consecutive failed calls and probes again after
# EMBED_BREAKER_RECOVERY_S.
EMBED_BREAKER_FAILURES = 5
EMBED_BREAKER_RECOVERY_S = 10.0

# Search, pgvector backend: the pool and connecting; a statement ends inside Envoy's 10 s try.
PG_POOL_MIN_SIZE = 2
PG_POOL_MAX_SIZE = 10
PG_STATEMENT_TIMEOUT_MS = 8_000
PG_CONNECT_ATTEMPTS = 5
PG_CONNECT_BACKOFF_BASE_S = 2.0
# How often the server checks that the database answers (and flips its health).
PG_HEALTH_INTERVAL_S = 1.0
PG_HEALTH_TIMEOUT_S = 2.0
# The embedded server: database, superuser and the port that names its unix socket.
PG_EMBEDDED_DATABASE = "ragmesh"
PG_EMBEDDED_USER = "postgres"
PG_EMBEDDED_PORT = 5432
# The embedded server's configuration (postgres -c NAME=VALUE); enough memory to build an
# HNSW index of 100,000 384-d vectors in one pass.
PG_EMBEDDED_SERVER_SETTINGS = {
    "shared_buffers": "256MB",
    "maintenance_work_mem": "512MB",
    "max_parallel_maintenance_workers": "2",
    "unix_socket_permissions": "0700",
}

# Search: the HNSW index. ef_search >= the candidates wanted (iterative scans go past it).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 100

# Search, Qdrant backend: empty for Qdrant's own engine in-process under STATE_DIR/qdrant-edge
# (qdrant-edge-py), "edge:DIR" for it elsewhere, ":memory:" or a directory for qdrant-client's
# local mode, or a Qdrant server's http(s):// URL.
QDRANT_LOCATION = ""
QDRANT_PREFER_GRPC = True

# Mesh: Envoy's addresses and how `ragmesh up` lays out replicas.
ENVOY_CLIENT_LISTEN = "0.0.0.0:8443"
ENVOY_INTERNAL_LISTEN = "127.0.0.1:8444"
ENVOY_ADMIN_LISTEN = "127.0.0.1:9901"
REPLICA_PORT_STEP = 100
MESH_DRAIN_S = 3.0

# Coordinator: request limits (documented in
# protos/ragmesh/coordinator/v1/coordinator_service.proto).
COORDINATOR_MAX_QUERY_CHARS = 2000
COORDINATOR_MAX_COLLECTIONS = 16
COORDINATOR_DEFAULT_TOP_K = 5
COORDINATOR_MAX_TOP_K = 50
DEFAULT_CONTEXT_TOKENS = 1024
MAX_CONTEXT_TOKENS = 8192
DEFAULT_ANSWER_TOKENS = 512
MAX_ANSWER_TOKENS = 4096
MAX_OUTCOME_CHARS = 4000
MAX_EXPORT_INTERACTIONS = 1_000_000
# Interactions older than this many days are what `ragmesh db purge-interactions` deletes
# when it is given no --older-than; 0 keeps them until an operator names an age.
INTERACTIONS_RETENTION_DAYS = 0
# A passage that does not fit the rest of the context budget is cut to fit when at least
# this many tokens are left; otherwise the context ends before it.
MIN_PARTIAL_PASSAGE_TOKENS = 32

# Coordinator: routing. LOCAL answers when the best dense similarity reaches the threshold
# (re-read from the config file, at most every CONFIG_CHECK_INTERVAL_S, without a restart)
# and the local backend's health probe (cached HEALTH_CACHE_S) passes.
CONFIDENCE_THRESHOLD = 0.7
CONFIG_CHECK_INTERVAL_S = 1.0
BACKEND_HEALTH_CACHE_S = 5.0
BACKEND_HEALTH_TIMEOUT_S = 1.0

# Coordinator: calling the language-model backends (OpenAI-compatible chat completions).
# A call fails when connecting takes BACKEND_CONNECT_TIMEOUT_S, when the backend is silent
# for BACKEND_IDLE_TIMEOUT_S between chunks, or when the whole answer takes longer than
# BACKEND_DEADLINE_S; its breaker opens after that side's count of consecutive failures and
# lets a probe through after BACKEND_BREAKER_RECOVERY_S.
BACKEND_CONNECT_TIMEOUT_S = 5.0
BACKEND_IDLE_TIMEOUT_S = 30.0
BACKEND_DEADLINE_S = 120.0
LOCAL_BREAKER_FAILURES = 3
REMOTE_BREAKER_FAILURES = 5
BACKEND_BREAKER_RECOVERY_S = 30.0
ANSWER_TEMPERATURE = 0.2

# Coordinator: calling search once (Envoy retries: a whole 10 s try, then another replica).
SEARCH_TIMEOUT_S = 15.0
SEARCH_BREAKER_FAILURES = 5
SEARCH_BREAKER_RECOVERY_S = 10.0

# Coordinator: interactions and feedback. Interactions rated +1 are written back to this
# collection (query and answer, cut to INTERACTION_DOCUMENT_MAX_CHARS) for later context.
INTERACTIONS_COLLECTION = "interactions"
INTERACTION_DOCUMENT_MAX_CHARS = 20_000
EXPORT_PAGE_SIZE = 500

# Coordinator: the interactions database (the search service's PostgreSQL). The server is
# SERVING only while a ping every COORDINATOR_PG_HEALTH_INTERVAL_S answers.
COORDINATOR_PG_POOL_MIN_SIZE = 1
COORDINATOR_PG_POOL_MAX_SIZE = 5
COORDINATOR_PG_STATEMENT_TIMEOUT_MS = 10_000
COORDINATOR_PG_CONNECT_ATTEMPTS = 5
COORDINATOR_PG_CONNECT_BACKOFF_BASE_S = 2.0
COORDINATOR_PG_HEALTH_INTERVAL_S = 1.0
COORDINATOR_PG_HEALTH_TIMEOUT_S = 2.0

# Telemetry: OpenTelemetry traces, exported with OTLP over gRPC when an endpoint is set
# (telemetry.otlp_endpoint or the standard OTEL_EXPORTER_OTLP_ENDPOINT; empty: no tracing).
# The share of new traces recorded: 1.0 for development, 0.01 suggested for production. A
# call that arrives with a sampled trace context is recorded whatever the ratio.
TRACE_SAMPLING_RATIO = 1.0
# Finished spans are sent in batches at least this often, and at shutdown.
TRACE_EXPORT_DELAY_MS = 5000
TRACE_EXPORT_TIMEOUT_S = 10.0
# Spans kept waiting for export; past this new spans are dropped (never blocks a call).
TRACE_MAX_QUEUE_SPANS = 2048

# --- the OpenAI-compatible HTTP adapter (ragmeshd/openai_compat) ------------------------------
OPENAI_LISTEN = "127.0.0.1:50054"
# An embeddings call through the adapter; a whole chat completion (Ask streams the answer).
OPENAI_EMBED_TIMEOUT_S = 60.0
OPENAI_ASK_TIMEOUT_S = 300.0
# The largest HTTP request body a route reads (the OpenAI routes, HTTP/JSON through Envoy's
# transcoder); larger ones are 413 before any work. Uploads have their own limit.
HTTP_MAX_BODY_BYTES = 1024 * 1024
# A mounted (cert-manager) certificate of the adapter is looked at this often for a renewal.
OPENAI_CERT_RELOAD_INTERVAL_S = 30.0

# Embeddings: runtime and caching (issue 11). Where the forward pass runs: "auto" is, on a
# GPU, torch in fp16; on a CPU the fastest runtime on this machine whose vectors match torch
# fp32's (cosine >= 0.9999 on a fixed text set), measured on first start and kept with the
# converted models under STATE_DIR/models.
EMBEDDINGS_RUNTIME: Literal["auto", "torch", "onnx", "openvino"] = "auto"
# CPU threads the model process may use (torch's pool, ONNX Runtime's, OpenVINO's streams);
# 0: each runtime's own choice, every core it sees (on Kubernetes without a CPU limit, the
# node's). The embeddings Deployment sets it to its CPU request (the Downward API).
EMBEDDINGS_CPU_THREADS = 0
# Each replica keeps the vectors of recently embedded texts in memory, up to this many bytes
# (least recently used first out; a 384-d vector takes ~1.7 KB with its key).
EMBEDDINGS_CACHE_MAX_BYTES = 64 * 1024 * 1024
# Entries of the optional shared tier (Redis/Valkey, by URL) expire after this long.
EMBEDDINGS_CACHE_REDIS_TTL_S = 7 * 24 * 3600
# A shared-tier call slower than this counts as failed; after a failure the tier is skipped
# for CACHE_REDIS_RETRY_S (the cache is an optimisation: Embed never waits on a sick Redis).
CACHE_REDIS_TIMEOUT_S = 0.25
CACHE_REDIS_RETRY_S = 5.0

# Search: the result cache (issue 11). A Search answered before is answered from memory for
# up to this long, and no longer once its collection is written to (on every replica: see
# ragmeshd/search/result_cache.py); 0 turns it off. Each replica keeps at most this many bytes.
SEARCH_RESULT_CACHE_TTL_S = 60.0
SEARCH_RESULT_CACHE_MAX_BYTES = 32 * 1024 * 1024

# Self-healing (issue 9): `ragmesh up` starts a child that exits without being asked again
# after RESTART_FIRST_DELAY_S, doubling per consecutive exit up to RESTART_MAX_DELAY_S; a child
# healthy for RESTART_RESET_AFTER_S starts again from the first delay. CRASH_LOOP_EXITS exits
# within CRASH_LOOP_WINDOW_S stop the whole mesh (exit code 1).
RESTART_FIRST_DELAY_S = 1.0
RESTART_MAX_DELAY_S = 30.0
RESTART_RESET_AFTER_S = 60.0
CRASH_LOOP_EXITS = 5
CRASH_LOOP_WINDOW_S = 120.0
# Embeddings: a model process silent on a batch this long is hung, killed and replaced (64 texts
# take < 2 s on 2 cores). Liveness, not a deadline: each call stops waiting at its own.
MODEL_BATCH_TIMEOUT_S = 30.0
# Security (issue 10): where the CA key's passphrase comes from (ragmeshd/pki/passphrase.py).
CA_PASSPHRASE_ENV = "RAGMESH_CA_PASSPHRASE"
CA_PASSPHRASE_FILE = "~/.config/ragmesh/ca-passphrase"

# The llm service (issue 22): llama.cpp running a small chat model, one generation at a time.
LLM_LISTEN = "127.0.0.1:50055"
LLM_METRICS_LISTEN = "127.0.0.1:9467"
# Prompt and reply together: five 200-token passages, the instructions and a 512-token answer
# fit with room to spare; the KV cache of SmolLM2-135M at 4096 tokens is about 90 MB.
LLM_CONTEXT_WINDOW_TOKENS = 4096
# 0: as many threads as CPUs this process may use.
LLM_THREADS = 0
LLM_BATCH_TOKENS = 512
# Requests waiting while the model generates another; one more is RESOURCE_EXHAUSTED.
LLM_MAX_WAITING = 8
LLM_DEFAULT_MAX_TOKENS = 256
LLM_MAX_TOKENS_LIMIT = 2048
LLM_DEFAULT_TEMPERATURE = 0.2
LLM_MAX_MESSAGES = 64
LLM_MAX_MESSAGE_CHARS = 32_000
LLM_MAX_STOP_SEQUENCES = 4
LLM_MAX_STOP_SEQUENCE_CHARS = 64
# Envoy's cap on calls in flight to one llm replica: the one generating, its queue, and room
# for Info probes; past it Envoy refuses at once.
LLM_ENVOY_MAX_REQUESTS = 16

# Envoy's rate-limit service down or slow: calls of limited keys are refused (fail closed).
RATELIMIT_FAIL_OPEN = False
# How long Envoy (and a server charging work) waits for the rate-limit service's answer: a
# decision is well under a millisecond, so 250 ms is a service frozen or flooded, not busy.
RATELIMIT_TIMEOUT_S = 0.25

# A log in STATE_DIR/logs is rotated past 50 MiB, keeping 3 older copies (up to 200 MiB a log).
LOG_MAX_BYTES = 50 * 1024 * 1024
LOG_KEEP = 3

# The search result cache's own small pool (issue 18 item 4, moved from search/result_cache.py):
# a lookup or a store is one short statement, so 4 connections serve a replica's searches, and
# a statement slower than 2 s is abandoned (the search then runs uncached).
SEARCH_RESULT_CACHE_POOL_MAX = 4
SEARCH_RESULT_CACHE_STATEMENT_TIMEOUT_MS = 2000

# The CLI's and bench clients' own retries of idempotent calls (runtime/client_retries.py,
# moved here by issue 18 item 4): up to 6 attempts, exponential backoff from 0.2 s capped at
# 5 s: about 6 s of backoff in all, enough to ride out a replica restarting.
CLIENT_RETRY_MAX_ATTEMPTS = 6
CLIENT_RETRY_INITIAL_BACKOFF_S = 0.2
CLIENT_RETRY_MAX_BACKOFF_S = 5.0
