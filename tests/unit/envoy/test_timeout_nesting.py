"""The timeout nesting of issue 18 holds for every route Envoy renders: a caller's deadline
bounds Envoy's route deadline (max_stream_duration, a grpc-timeout honoured up to
grpc_timeout_header_max), the route deadline leaves room for a retry after a per-try timeout,
the mesh's own callers give each hop a whole try and room for a retry, and every limit a
server enforces on its own inside a try (statement timeouts, the coordinator's search
deadline) ends before Envoy abandons that try.
The numbers come from ragmeshd/envoy/limits.py and defaults.py; the routes from the reference
rendering (envoy/reference/envoy.yaml, rewritten by `make generate`) and a fresh one."""

from __future__ import annotations

from typing import Any

import yaml

from ragmeshd import defaults
from ragmeshd.envoy import limits
from ragmeshd.envoy.limits import RETRY_BACKOFF_MAX_S
from ragmeshd.settings import Settings
from tests.helpers import REPO_ROOT

REFERENCE = REPO_ROOT / "envoy" / "reference" / "envoy.yaml"


def seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def rendered_routes() -> list[dict[str, Any]]:
    """Every route of every listener of the reference rendering."""
    config = yaml.safe_load(REFERENCE.read_text())
    found: list[dict[str, Any]] = []
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                manager = network_filter.get("typed_config", {})
                for host in manager.get("route_config", {}).get("virtual_hosts", []):
                    found.extend(r for r in host["routes"] if _to_a_service(r))
    return found


def _to_a_service(route: dict[str, Any]) -> bool:
    """Routes to the mesh's services and adapters; not the read-only views of Envoy's own
    admin interface (cluster envoy_admin), which keep Envoy's default 15 s route timeout."""
    return "route" in route and route["route"].get("cluster") != "envoy_admin"


def per_try_s(service: str) -> float:
    return limits.SERVICE_LIMITS[service].per_try_timeout_s


def test_every_route_is_bounded_by_a_duration_the_caller_may_shorten() -> None:
    routes = rendered_routes()
    assert routes
    for route in routes:
        action = route["route"]
        name = route["match"].get("path") or route["match"].get("prefix")
        # Envoy's own route timeout is off: the stream duration is the one deadline.
        assert seconds(action["timeout"]) == 0, name
        duration = action["max_stream_duration"]
        # A client's deadline is honoured up to the max; without one, the default applies.
        assert (
            0
            < seconds(duration["max_stream_duration"])
            <= seconds(duration["grpc_timeout_header_max"])
        ), name


def is_write(route: dict[str, Any]) -> bool:
    """A route of a method the limits table lists as a write of its service."""
    method = route["match"].get("path", "").rpartition("/")[2]
    table = limits.SERVICE_LIMITS.get(route["route"]["cluster"])
    return table is not None and method in table.writes


def test_a_writes_tries_are_bounded_by_its_deadline_alone() -> None:
    """A write's work grows with what it carries: a per-try timeout would abandon an honest
    large write and send it again from the start."""
    writes = [r for r in rendered_routes() if is_write(r)]
    # On the client listener and on the internal one the services call each other through.
    assert {r["match"]["path"] for r in writes} == {
        "/ragmesh.search.v1.SearchService/UpsertDocuments"
    }
    for route in writes:
        action = route["route"]
        assert "per_try_timeout" not in action["retry_policy"]
        duration = action["max_stream_duration"]
        assert seconds(duration["max_stream_duration"]) == limits.WRITE_DEADLINE_DEFAULT_S
        assert seconds(duration["grpc_timeout_header_max"]) == limits.WRITE_DEADLINE_MAX_S


def test_every_retried_route_fits_a_retry_inside_its_deadline() -> None:
    retried = [r for r in rendered_routes() if "retry_policy" in r["route"] and not is_write(r)]
    assert retried
    for route in retried:
        action = route["route"]
        policy = action["retry_policy"]
        per_try = seconds(policy["per_try_timeout"])
        backoff = seconds(policy["retry_back_off"]["max_interval"])
        route_s = seconds(action["max_stream_duration"]["max_stream_duration"])
        assert per_try > 0 and per_try + backoff < route_s, route["match"]


def test_the_limits_table_nests_for_every_service() -> None:
    for service, table in [*limits.SERVICE_LIMITS.items(), ("(default)", limits.DEFAULT_LIMITS)]:
        assert table.per_try_timeout_s + RETRY_BACKOFF_MAX_S < table.unary.default_s, service
        assert table.unary.default_s <= table.unary.max_s, service
        for stream, deadline in table.streams.items():
            assert deadline.default_s <= deadline.max_s, (service, stream)


def test_the_meshs_own_callers_give_each_hop_a_whole_try_and_the_hop_below_a_retry() -> None:
    settings = Settings()
    # The coordinator's deadline for search: a whole try of search, the backoff, and room for
    # the retry on another replica to answer (a third of a try: a Search through Envoy takes
    # ~150 ms at p99); and room below it for an Embed stuck on a frozen replica to be retried.
    search_deadline = settings.coordinator.search_timeout_s
    retry_room_s = search_deadline - per_try_s("search") - RETRY_BACKOFF_MAX_S
    assert retry_room_s >= per_try_s("search") / 3
    assert per_try_s("embeddings") + RETRY_BACKOFF_MAX_S < search_deadline
    assert search_deadline <= limits.SERVICE_LIMITS["search"].unary.max_s
    # Search's deadline for embeddings: a whole try and a retry, and honoured by Envoy.
    embed_deadline = settings.search.embed_timeout_s
    assert 2 * per_try_s("embeddings") + RETRY_BACKOFF_MAX_S < embed_deadline
    assert embed_deadline <= limits.SERVICE_LIMITS["embeddings"].unary.max_s
    # The coordinator's deadline for a generated answer fits Generate's route.
    generate = limits.SERVICE_LIMITS["llm"].streams["Generate"]
    assert settings.coordinator.backend_deadline_s < generate.default_s <= generate.max_s


def server_side_limits_s(settings: Settings) -> dict[str, dict[str, float]]:
    """Limits each service enforces on its own inside one call of a retried method, by
    service: they do not follow the call's deadline, so they must end before Envoy gives up
    on the try (or the server keeps a database busy, or waits on a hop below, for a try
    nobody waits for any more)."""
    return {
        "search": {
            "search.pg.statement_timeout_ms": settings.search.pg.statement_timeout_ms / 1000,
            "the result cache's statement timeout": (
                defaults.SEARCH_RESULT_CACHE_STATEMENT_TIMEOUT_MS / 1000
            ),
        },
        "coordinator": {
            "coordinator.pg.statement_timeout_ms": settings.coordinator.pg.statement_timeout_ms
            / 1000,
            # AugmentQuery (and RecordFeedback's write-back) call search within this.
            "coordinator.search_timeout_s": settings.coordinator.search_timeout_s,
        },
    }


def test_every_server_side_limit_ends_inside_the_per_try_timeout_of_its_route() -> None:
    for service, limits_of_service in server_side_limits_s(Settings()).items():
        for name, limit_s in limits_of_service.items():
            # 0 would turn a statement timeout off: no limit at all.
            assert 0 < limit_s < per_try_s(service), (service, name, limit_s)


def test_the_model_batch_limit_detects_a_hung_process_and_is_no_request_deadline() -> None:
    """embeddings.model_batch_timeout_s is longer than Embed's per-try timeout on purpose: it
    is a liveness check (a model process silent on one batch that long is hung, and is
    replaced), not a limit on a call. A call stops waiting at its own deadline or when Envoy
    abandons the try, and its texts leave the queue (tests/unit/embeddings/test_batcher.py:
    a call inside a hung batch stops waiting at its deadline). Shorter than a try, it would
    replace a healthy model process for a slow batch a caller still waits for."""
    assert per_try_s("embeddings") < Settings().embeddings.model_batch_timeout_s
