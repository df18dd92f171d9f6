"""Reading Envoy's admin interface (loopback only): readiness, cluster health, counters."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

ADMIN_TIMEOUT_S = 2.0

# The per-cluster counters `ragmesh status` shows, by stat suffix.
CLUSTER_COUNTERS = {
    "upstream_rq_total": "requests",
    "upstream_rq_retry": "retries",
    "outlier_detection.ejections_enforced_total": "ejections",
    "health_check.failure": "health-check failures",
    "membership_healthy": "healthy hosts",
    "membership_total": "hosts",
}


def _get(admin: str, path: str) -> str:
    # The scheme is fixed (http://) and the address is Envoy's admin from our own settings.
    url = f"http://{admin}{path}"
    with urllib.request.urlopen(url, timeout=ADMIN_TIMEOUT_S) as response:  # nosec B310
        return str(response.read().decode())


async def admin_get(admin: str, path: str) -> str:
    return await asyncio.to_thread(_get, admin, path)


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
