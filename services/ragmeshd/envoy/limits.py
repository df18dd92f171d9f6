"""What Envoy allows each service: deadlines, stream caps, circuit breakers and the one retry
layer of the mesh. ragmeshd/envoy/config.py renders these into routes and clusters.

Retries happen here and nowhere else: the services' own clients (search's embeddings client,
the coordinator's search client) make one attempt each. Each hop's retries are bounded three
ways: `num_retries` per call, a retry budget (retries in flight never exceed
RETRY_BUDGET_PERCENT of the cluster's active requests, with MIN_RETRY_CONCURRENCY allowed
whatever the load), and `previous_hosts` so a retry goes to a replica not yet tried.

Only the leaf service (embeddings) is retried on UNAVAILABLE. Search and the coordinator
answer UNAVAILABLE when *their* dependency is down, after Envoy has already retried the hop
to that dependency: retrying them too would multiply attempts (one Ask would become
3 x 3 Embed calls). They are retried only where the call provably never reached a replica
(connect failure, refused stream) or the replica vanished mid-call (reset).
RESOURCE_EXHAUSTED (a replica shedding load) is never retried: that is the signal to back off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Retry conditions. grpc-status conditions (unavailable) apply to "Trailers-Only" answers only,
# which is how a gRPC server fails a call before it sends any message.
TRANSPORT_RETRY_ON = "connect-failure,refused-stream,reset"
LEAF_RETRY_ON = f"unavailable,{TRANSPORT_RETRY_ON}"
NUM_RETRIES = 2
RETRY_BUDGET_PERCENT = 20.0
# At low load the percentage alone would allow one retry at a time; a replica that dies takes
# all its calls in flight with it, and they must all be retried on the others at once.
MIN_RETRY_CONCURRENCY = 10

# Per-try timeouts (an attempt that has not answered by then is abandoned and, the route's
# retry conditions including "reset", tried on another replica). They nest (issue 18, checked
# by tests/unit/envoy/test_timeout_nesting.py): a caller's deadline > the route's deadline >
# the per-try timeout > every limit a server enforces on its own inside a try. A caller whose
# deadline is no longer than a hop's per-try timeout never sees that hop retried; a server
# limit (a database statement timeout) no shorter than the per-try keeps a database busy for a
# try Envoy has already abandoned. A call's own deadline needs no such margin: the servers pass
# it on (ragmeshd.runtime.server.call_timeout) and stop waiting when Envoy resets the try.
#
# Embeddings, 5 s: a query in search spends one Embed and then the database, so an Embed stuck
# on a frozen replica is retried on another after 5 s + backoff (<= 0.25 s), inside search's
# try. Shorter would fit more retries but cut off honest work: search sends up to 32 texts per
# Embed (search.embed_batch_texts), which on a loaded 2-core machine takes seconds, and
# abandoning it would re-run it on another replica exactly when embeddings is busiest.
# (embeddings.model_batch_timeout_s, 30 s, is longer on purpose: it decides when the model
# process counts as hung and is replaced, not how long a call waits; a call stops waiting at
# its own deadline or when Envoy abandons it, and its texts leave the queue.)
# Search, 10 s, no shorter: a try must hold a retried Embed plus the database. Writes are the
# exception (WRITE_DEADLINE below): their work grows with what they carry. Search's
# statements stop before the try does (8 s,
# search.pg.statement_timeout_ms; the result cache's 2 s). The coordinator gives search 15 s
# (coordinator.search_timeout_s): a whole try, the backoff, and 4.75 s for the retry on
# another replica, where a Search takes ~150 ms at p99 through Envoy (docs/benchmarks.md).
# Coordinator, 20 s: AugmentQuery holds that 15 s search call, and its database statements stop
# at 10 s (coordinator.pg.statement_timeout_ms). Callers without a deadline get the unary
# route's 30 s, which still holds the try and the backoff.
# The llm service and any other cluster: 10 s (Info; Generate is a stream, never retried).
PER_TRY_TIMEOUT_S = 10.0
EMBEDDINGS_PER_TRY_TIMEOUT_S = 5.0
COORDINATOR_PER_TRY_TIMEOUT_S = 20.0
# A write embeds every passage it carries: `ragmesh ingest` sends up to 512 passages a call,
# ~13-19 s at the 27-40 passages/s a 2-core machine embeds (docs/benchmarks.md), and an upload
# of one large file more. A per-try timeout would abandon such an honest write and send it
# again from the start, so a write's tries are bounded by the call's deadline alone (its own
# route, still retried where the call never reached a replica or the replica vanished). Each
# of its database statements stays inside search.pg.statement_timeout_ms: the passages go in
# chunks (defaults.PG_COPY_CHUNK_PASSAGES).
WRITE_DEADLINE_DEFAULT_S = 120.0
WRITE_DEADLINE_MAX_S = 600.0


@dataclass(frozen=True)
class Deadline:
    """How long calls on a route may take.

    `default_s` applies when the caller sent no grpc-timeout; a caller's grpc-timeout is
    honoured up to `max_s`. Both are Envoy's max_stream_duration: measured from the start of
    the call to its last response message, so a stream is capped as a whole.
    """

    default_s: float
    max_s: float

    def __post_init__(self) -> None:
        if not 0 < self.default_s <= self.max_s:
            raise ValueError(f"a deadline needs 0 < default ({self.default_s}) <= max")


WRITE_DEADLINE = Deadline(default_s=WRITE_DEADLINE_DEFAULT_S, max_s=WRITE_DEADLINE_MAX_S)


@dataclass(frozen=True)
class ServiceLimits:
    """One service's routes and cluster limits."""

    # Unary methods.
    unary: Deadline
    # Streaming methods by name, each with its own route and duration cap.
    streams: Mapping[str, Deadline] = field(default_factory=dict)
    retry_on: str = TRANSPORT_RETRY_ON
    per_try_timeout_s: float = PER_TRY_TIMEOUT_S
    # Retried unary methods whose work grows with the request: their own deadline, and no
    # per-try timeout (WRITE_DEADLINE_DEFAULT_S above).
    writes: Mapping[str, Deadline] = field(default_factory=dict)
    # Circuit breakers, per replica of the cluster (scaled by the number of endpoints). Past
    # max_requests Envoy answers UNAVAILABLE at once (response flag UO; never retried, and not
    # counted against the replica by outlier detection). For search and the coordinator each
    # server's own concurrency limit (server.max_concurrent_rpcs, 256 by default) normally
    # refuses first, with RESOURCE_EXHAUSTED. Embeddings is capped here far lower, from its
    # capacity (embeddings.envoy_max_requests, UpstreamCluster.max_requests_per_replica), so
    # that Envoy refuses the excess before it costs the Python server CPU.
    max_requests_per_replica: int = 512
    max_pending_requests_per_replica: int = 128
    max_connections_per_replica: int = 64


SERVICE_LIMITS: dict[str, ServiceLimits] = {
    "embeddings": ServiceLimits(
        unary=Deadline(default_s=30.0, max_s=60.0),
        # A bulk EmbedStream may run for ten minutes; its message count is capped by the
        # server (embeddings.max_stream_messages).
        streams={"EmbedStream": Deadline(default_s=600.0, max_s=600.0)},
        retry_on=LEAF_RETRY_ON,
        per_try_timeout_s=EMBEDDINGS_PER_TRY_TIMEOUT_S,
    ),
    "search": ServiceLimits(
        unary=Deadline(default_s=30.0, max_s=120.0),
        writes={"UpsertDocuments": WRITE_DEADLINE},
    ),
    # A leaf: Info is retried on another replica; Generate streams for as long as an answer
    # may take (the coordinator's backend_deadline_s, 120 s by default).
    "llm": ServiceLimits(
        unary=Deadline(default_s=30.0, max_s=60.0),
        streams={"Generate": Deadline(default_s=150.0, max_s=180.0)},
        retry_on=LEAF_RETRY_ON,
    ),
    "coordinator": ServiceLimits(
        unary=Deadline(default_s=30.0, max_s=120.0),
        per_try_timeout_s=COORDINATOR_PER_TRY_TIMEOUT_S,
        streams={
            # Retrieval plus an answer streamed by a language model (its own deadline is
            # coordinator.backend_deadline_s, 120 s by default).
            "Ask": Deadline(default_s=180.0, max_s=180.0),
            # An export without a deadline gets ten minutes; a caller may ask for an hour.
            "ExportInteractions": Deadline(default_s=600.0, max_s=3600.0),
        },
    ),
}
# Any other cluster (a service this table does not know yet, an HTTP adapter): treated as a
# leaf that calls no other service, so UNAVAILABLE is its own and worth another replica.
DEFAULT_LIMITS = ServiceLimits(unary=Deadline(default_s=30.0, max_s=120.0), retry_on=LEAF_RETRY_ON)
# Plain HTTP routes of the adapters (no grpc-timeout): as long as an Ask, which an
# OpenAI-style chat completion streams.
HTTP_ADAPTER_DEADLINE = SERVICE_LIMITS["coordinator"].streams["Ask"]

# Downstream (callers of Envoy).
# A client must send its request headers within this long of opening a stream.
REQUEST_HEADERS_TIMEOUT_S = 10.0
# A stream with no traffic either way for this long is reset: longer than the coordinator's
# silence limit for a language model (coordinator.backend_idle_timeout_s, 30 s).
STREAM_IDLE_TIMEOUT_S = 60.0
# A connection with no stream for this long is closed.
CONNECTION_IDLE_TIMEOUT_S = 3600.0
# Bytes Envoy buffers per connection, each way, before it stops reading (flow control); a
# request larger than this is not retried (Envoy cannot replay what it did not keep).
PER_CONNECTION_BUFFER_LIMIT_BYTES = 1024 * 1024
# HTTP/2 flow-control windows of downstream connections (Envoy's edge recommendations).
INITIAL_STREAM_WINDOW_BYTES = 64 * 1024
INITIAL_CONNECTION_WINDOW_BYTES = 1024 * 1024


# Retries' backoff (Envoy's exponential backoff with jitter between attempts): short, since a
# retry goes to another replica (previous_hosts) rather than waiting for the same one to heal;
# and up to 3 tries at picking a replica not yet tried.
RETRY_BACKOFF_BASE_S = 0.025
RETRY_BACKOFF_MAX_S = 0.25
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 3

# Downstream (the listeners): time a client gets to finish its TLS handshake, HTTP/2 streams
# one connection may hold, and connections the whole Envoy accepts (overload protection).
HANDSHAKE_TIMEOUT_S = 10.0
MAX_CONCURRENT_STREAMS = 1024
MAX_DOWNSTREAM_CONNECTIONS = 10_000

# Upstream connections (moved from envoy/clusters.py, issue 18: every Envoy number here).
# Connecting to a replica on this host or in the cluster takes milliseconds: past 1 s it is
# gone. HTTP/2 keepalive pings every 30 s find a silently dead connection within 35 s.
CONNECT_TIMEOUT_S = 1.0
KEEPALIVE_INTERVAL_S = 30.0
KEEPALIVE_TIMEOUT_S = 5.0

# Active gRPC health checks: each replica's grpc.health.v1 every second (every 2 s while the
# cluster has no traffic); two failures take it out of rotation, one success puts it back.
HEALTH_CHECK_INTERVAL_S = 1.0
HEALTH_CHECK_TIMEOUT_S = 1.0
HEALTH_CHECK_NO_TRAFFIC_INTERVAL_S = 2.0
UNHEALTHY_THRESHOLD = 2
HEALTHY_THRESHOLD = 1

# Outlier detection (passive): eject a replica that keeps failing (2 gateway failures or 5
# errors in a row, checked every second) for 30 s, on every cluster (100 % enforcing), but
# never more than half the replicas, so a mesh-wide fault cannot empty a cluster.
CONSECUTIVE_GATEWAY_FAILURE = 2
CONSECUTIVE_5XX = 5
OUTLIER_ENFORCING_PERCENT = 100
OUTLIER_INTERVAL_S = 1.0
BASE_EJECTION_TIME_S = 30.0
MAX_EJECTION_PERCENT = 50


def limits_for(cluster: str) -> ServiceLimits:
    return SERVICE_LIMITS.get(cluster, DEFAULT_LIMITS)
