"""Keeps the search service's gRPC health in step with its document store.

After start-up a background task pings the store every `interval_s`. When a ping fails the
service turns NOT_SERVING (so Envoy and `ragmesh up` route around it) and its RPCs answer
UNAVAILABLE at once; when pings succeed again it turns SERVING by itself. The backend
replaces its stale connections on a failed ping, so recovery needs no restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ragmeshd.runtime.dependency_monitor import DependencyMonitor
from ragmeshd.search.backends.base import SearchBackend

_log = logging.getLogger("ragmesh.search.health")


def store_monitor(
    backend: SearchBackend,
    *,
    interval_s: float,
    set_serving: Callable[[bool], Awaitable[None]],
    on_change: Callable[[float | None], None],
) -> DependencyMonitor:
    """A monitor of `backend`; `on_change` gets the time.monotonic() the store went down,
    or None when it is back."""

    async def probe() -> str | None:
        try:
            await backend.ping()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    return DependencyMonitor(
        probe,
        interval_s=interval_s,
        set_serving=set_serving,
        log=_log,
        what="store",
        task_name="store-monitor",
        log_fields={"backend": backend.name},
        on_change=on_change,
    )
