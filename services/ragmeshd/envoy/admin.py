"""Envoy's admin interface: readiness, cluster health and counters (read-only, loopback), and
the two changes `ragmesh up` and its benches make through the admin socket: runtime overrides
and stopping the client listener."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

ADMIN_TIMEOUT_S = 2.0
# Calls in progress on the client listener (its connection manager's stat prefix is "client").
CLIENT_ACTIVE = r"http\.client\.downstream_rq_active"
STOP_POLL_S = 0.1

# The per-cluster counters `ragmesh status` shows, by stat suffix.
CLUSTER_COUNTERS = {
    "upstream_rq_total": "requests",
    "upstream_rq_retry": "retries",
    "outlier_detection.ejections_enforced_total": "ejections",
    "health_check.failure": "health-check failures",
    "membership_healthy": "healthy hosts",
    "membership_total": "hosts",
}


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: Envoy's admin under `up` (STATE_DIR/run/envoy-admin.sock)."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(self.timeout)
        connection.connect(self._socket_path)
        self.sock = connection


def _request_unix(socket_path: str, path: str, method: str = "GET") -> str:
    connection = _UnixHTTPConnection(socket_path, ADMIN_TIMEOUT_S)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read().decode()
    finally:
        connection.close()
    if response.status >= 400:
        raise OSError(f"Envoy admin {path}: HTTP {response.status}")
    return body


def _get(admin: str, path: str) -> str:
    """GET `path` from Envoy's admin at `admin`: host:port, or unix:/path/to/socket."""
    if admin.startswith("unix:"):
        return _request_unix(admin.removeprefix("unix:"), path)
    # The scheme is fixed (http://) and the address is Envoy's admin from our own settings.
    url = f"http://{admin}{path}"
    with urllib.request.urlopen(url, timeout=ADMIN_TIMEOUT_S) as response:  # nosec B310
        return str(response.read().decode())


def admin_post(admin: str, path: str) -> None:
    """POST `path` (an admin action such as /healthcheck/fail) to Envoy's admin at `admin`:
    host:port, or unix:/path/to/socket."""
    if admin.startswith("unix:"):
        _request_unix(admin.removeprefix("unix:"), path, "POST")
        return
    request = urllib.request.Request(f"http://{admin}{path}", data=b"", method="POST")
    # A fixed http:// URL to Envoy's admin address from the settings (bandit B310).
    with urllib.request.urlopen(request, timeout=ADMIN_TIMEOUT_S):  # nosec B310
        pass


async def admin_get(admin: str, path: str) -> str:
    return await asyncio.to_thread(_get, admin, path)


async def set_runtime(admin_socket: str, key: str, value: str) -> None:
    """Override one of Envoy's runtime values (e.g. a circuit breaker,
    circuit_breakers.<cluster>.default.max_requests) through its admin socket, the only
    admin that changes state; an empty `value` removes the override."""
    path = f"/runtime_modify?{urllib.parse.urlencode({key: value})}"
    await asyncio.to_thread(_request_unix, admin_socket, path, "POST")


async def stop_taking_calls(admin_socket: str, limit_s: float) -> int:
    """Envoy's client listener (the one INBOUND listener) stops accepting connections, then
    this waits until the calls it had already taken have finished, at most `limit_s`.
    Returns the calls still in flight then (0: all finished)."""
    await asyncio.to_thread(_request_unix, admin_socket, "/drain_listeners?inboundonly", "POST")
    deadline = time.monotonic() + limit_s
    while True:
        body = json.loads(
            await admin_get(
                f"unix:{admin_socket}",
                f"/stats?format=json&filter={urllib.parse.quote(f'^{CLIENT_ACTIVE}$')}",
            )
        )
        active = sum(int(entry.get("value", 0)) for entry in body.get("stats", []))
        if active == 0 or time.monotonic() >= deadline:
            return active
        await asyncio.sleep(STOP_POLL_S)


async def clusters_healthy(admin: str, clusters: list[str]) -> bool:
    """Envoy is LIVE and every cluster has at least one host passing health checks."""
    try:
        if (await admin_get(admin, "/ready")).strip() != "LIVE":
            return False
        stats = await cluster_stats(admin, clusters)
    except (urllib.error.URLError, OSError):
        return False
    return all(stats.get(cluster, {}).get("healthy hosts", 0) >= 1 for cluster in clusters)


async def cluster_stats(admin: str, clusters: list[str]) -> dict[str, dict[str, int]]:
    """The CLUSTER_COUNTERS of each cluster, by cluster name and counter label."""
    body = json.loads(await admin_get(admin, "/stats?format=json&filter=^cluster%5C."))
    stats: dict[str, dict[str, int]] = {cluster: {} for cluster in clusters}
    for entry in body.get("stats", []):
        name, value = entry.get("name", ""), entry.get("value")
        if not isinstance(value, int):
            continue
        for cluster in clusters:
            prefix = f"cluster.{cluster}."
            suffix = name.removeprefix(prefix)
            if name.startswith(prefix) and suffix in CLUSTER_COUNTERS:
                stats[cluster][CLUSTER_COUNTERS[suffix]] = value
    return stats
