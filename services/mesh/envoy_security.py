"""Envoy's share of the security controls (issue 10), kept apart from envoy_config.py:
the key-id filter every listener gets (the access log names each call's key), and per-key
rate limits on the client listener through ragmesh's rate-limit service.

Why at Envoy, through one service: Envoy is the single entrance for clients, so one
decision point per call holds a key's limit across every replica (a 50/s key gets 50/s in
all, not 50/s per replica), refuses before any replica spends work, and counts each client
call once however often Envoy retries it. See docs/security.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RATELIMIT_CLUSTER = "ragmesh_ratelimit"
# How long Envoy waits for a rate-limit decision before letting the call through.
RATELIMIT_TIMEOUT_S = 0.25
# The headers whose value becomes the rate-limit descriptor (the service reads the key).
KEY_HEADERS = ("authorization", "x-api-key")


def key_rate_limits() -> list[dict[str, Any]]:
    """The virtual host's rate_limits: one descriptor per key header present."""
    return [
        {
            "actions": [
                {
                    "request_headers": {
                        "header_name": header,
                        "descriptor_key": header,
                        "skip_if_absent": True,
                    }
                }
            ]
        }
        for header in KEY_HEADERS
    ]


def secure_listener(
    listener: dict[str, Any], render: Any, duration: Any, *, rate_limited: bool
) -> None:
    """Add the key-id filter (and, when `rate_limited`, the rate-limit filter with its
    descriptors) in front of the listener's other HTTP filters."""
    for chain in listener["filter_chains"]:
        for network_filter in chain["filters"]:
            manager = network_filter["typed_config"]
            if "http_filters" not in manager:
                continue
            added = [render("key_id_filter.yaml")]
            if rate_limited:
                added.append(
                    render(
                        "ratelimit_filter.yaml",
                        timeout=duration(RATELIMIT_TIMEOUT_S),
                        cluster=RATELIMIT_CLUSTER,
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
