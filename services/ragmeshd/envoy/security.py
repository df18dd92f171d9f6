"""Envoy's share of the security controls (issue 10), kept apart from envoy/config.py:
the credential filter every listener gets (one credential per request, the key id for the
access log), and per-key rate limits on the client listener through ragmesh's rate-limit
service.

Why at Envoy, through one service: Envoy is the single entrance for clients, so one
decision point per call holds a key's limit across every replica (a 50/s key gets 50/s in
all, not 50/s per replica), refuses before any replica spends work, and counts each client
call once however often Envoy retries it. See docs/security.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragmeshd import defaults
from ragmeshd.runtime.credentials import LUA_CREDENTIAL_CHECK
from ragmeshd.runtime.keystore import UNLIMITED_KEY_RE2
from ragmeshd.state import MeshLayout

# Named as its certificate: over TLS (Kubernetes) Envoy verifies ratelimit.ragmesh.internal.
RATELIMIT_CLUSTER = "ratelimit"
RATELIMIT_GRPC_SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
# The headers whose value becomes the rate-limit descriptor (the service reads the key),
# each with the whole value of a key that has no rate limit (RE2, matched in full).
UNLIMITED_KEY_VALUES = {
    "authorization": f"(?i:bearer) {UNLIMITED_KEY_RE2}",
    "x-api-key": UNLIMITED_KEY_RE2,
}


# The only routes on the client listener that need no API key (issue 20, docs/security.md):
# the API's description and Swagger UI, static files that the HTTP adapter serves
# (ragmeshd/openai_compat/apidocs.py), for GET only and still over mutual TLS. An exact path,
# or a prefix when it ends in "/" (Swagger UI's assets). The rate-limit filter is off on them.
KEYLESS_PATHS = ("/openapi.json", "/docs", "/docs/")
RATELIMIT_FILTER = "envoy.filters.http.ratelimit"


def keyless_route(path: str, route: dict[str, Any]) -> dict[str, Any]:
    """`route` (to the adapter) for GET `path` with no key check: no rate-limit descriptor is
    made or asked about. Other methods on these paths fall through to the other routes."""
    if path not in KEYLESS_PATHS:
        raise ValueError(f"{path!r} is not one of the key-less paths {KEYLESS_PATHS}")
    route["match"] = {
        "prefix" if path.endswith("/") else "path": path,
        "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
    }
    route["typed_per_filter_config"] = {
        RATELIMIT_FILTER: {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            "disabled": True,
        }
    }
    return route


def key_rate_limits() -> list[dict[str, Any]]:
    """The virtual host's rate_limits: one descriptor per key header present, except for a
    key without a rate limit (its text says so: ragmeshd/runtime/keystore.py), which skips
    the rate-limit service and its CPU on every call. A limited key in that shape is refused
    by the replicas, so skipping the check spends nobody's limit."""
    return [
        {
            "actions": [
                {
                    "header_value_match": {
                        "descriptor_key": "key_may_be_limited",
                        "descriptor_value": "yes",
                        "expect_match": False,
                        "headers": [
                            {"name": header, "string_match": {"safe_regex": {"regex": value}}}
                        ],
                    }
                },
                # Without the header there is no descriptor at all (skip_if_absent left false:
                # true would still send the entry above alone, a check for nothing).
                {"request_headers": {"header_name": header, "descriptor_key": header}},
            ]
        }
        for header, value in UNLIMITED_KEY_VALUES.items()
    ]


def secure_listener(
    listener: dict[str, Any],
    render: Any,
    duration: Any,
    *,
    rate_limited: bool,
    fail_open: bool = False,
    timeout_s: float = defaults.RATELIMIT_TIMEOUT_S,
) -> None:
    """Add the credential filter (and, when `rate_limited`, the rate-limit filter with its
    descriptors, waiting `timeout_s` for a decision) in front of the listener's other HTTP
    filters."""
    for chain in listener["filter_chains"]:
        for network_filter in chain["filters"]:
            manager = network_filter["typed_config"]
            if "http_filters" not in manager:
                continue
            added = [render("credential_filter.yaml", source=LUA_CREDENTIAL_CHECK)]
            if rate_limited:
                added.append(
                    render(
                        "ratelimit_filter.yaml",
                        timeout=duration(timeout_s),
                        cluster=RATELIMIT_CLUSTER,
                        failure_mode_deny=not fail_open,
                    )
                )
                for host in manager["route_config"]["virtual_hosts"]:
                    host["rate_limits"] = key_rate_limits()
            manager["http_filters"][:0] = added


def ratelimit_cluster(socket: Path, render: Any, connect_timeout: str) -> Any:
    return render(
        "ratelimit_cluster.yaml",
        name=RATELIMIT_CLUSTER,
        connect_timeout=connect_timeout,
        socket=str(socket),
    )


# --- Envoy's admin on a unix socket -----------------------------------------------------------
# Admin can stop Envoy, turn on debug logging (which logs headers, keys included) and reset
# counters, without authentication: it listens on a 0600 unix socket in STATE_DIR/run, reachable
# by the mesh's own user only (`ragmesh status` reads it there). Prometheus and the tools that
# read counters get a loopback listener that forwards only these read-only GETs to it.
ADMIN_CLUSTER = "envoy_admin"
ADMIN_SOCKET_MODE = 0o600
READ_ONLY_ADMIN_PATHS = ("/stats", "/ready", "/clusters", "/certs", "/server_info")


def admin_on_socket(
    bootstrap: dict[str, Any], socket: Path, stats_address: tuple[str, int]
) -> None:
    """Move admin to `socket` and serve its read-only pages on `stats_address` (in place)."""
    bootstrap["admin"]["address"] = {"pipe": {"path": str(socket), "mode": ADMIN_SOCKET_MODE}}
    routes: list[dict[str, Any]] = [
        {
            "match": {
                "prefix": path,
                "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
            },
            "route": {"cluster": ADMIN_CLUSTER},
        }
        for path in READ_ONLY_ADMIN_PATHS
    ]
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 403}})
    host, port = stats_address
    bootstrap["static_resources"]["listeners"].append(
        {
            "name": "admin_stats",
            "address": {"socket_address": {"address": host, "port_value": port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.network"
                                ".http_connection_manager.v3.HttpConnectionManager",
                                "stat_prefix": "admin_stats",
                                "route_config": {
                                    "name": "admin_stats",
                                    "virtual_hosts": [
                                        {"name": "admin", "domains": ["*"], "routes": routes}
                                    ],
                                },
                                "http_filters": [
                                    {
                                        "name": "envoy.filters.http.router",
                                        "typed_config": {
                                            "@type": "type.googleapis.com/envoy.extensions"
                                            ".filters.http.router.v3.Router"
                                        },
                                    }
                                ],
                            },
                        }
                    ]
                }
            ],
        }
    )
    bootstrap["static_resources"]["clusters"].append(
        {
            "name": ADMIN_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": ADMIN_CLUSTER,
                "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(socket)}}}}]}
                ],
            },
        }
    )


def admin_socket(state_dir: Path) -> Path:
    """Where `ragmesh up` puts Envoy's admin socket."""
    return MeshLayout(state_dir).envoy_admin_socket
