"""Keeps the coordinator's gRPC health in step with its database: a ping every
`interval_s`; a failed one turns the server NOT_SERVING (Envoy and `ragmesh up` route
around it), and the first answer after that turns it SERVING again, without a restart."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ragmeshd.coordinator.store import InteractionStore
from ragmeshd.postgres.pool import drop_open_connections
from ragmeshd.runtime.dependency_monitor import DependencyMonitor

_log = logging.getLogger("ragmesh.coordinator.health")


def database_monitor(
    store: InteractionStore,
    *,
    interval_s: float,
    timeout_s: float,
    set_serving: Callable[[bool], Awaitable[None]],
) -> DependencyMonitor:
    async def probe() -> str | None:
        return None if await store.ping(timeout_s) else ""

    def on_change(since: float | None) -> None:
        if since is not None:
            # Statements already waiting on a frozen database fail now with UNAVAILABLE
            # instead of at their callers' deadline (ragmeshd/postgres/pool.py).
            drop_open_connections()

    return DependencyMonitor(
        probe,
        interval_s=interval_s,
        set_serving=set_serving,
        log=_log,
        what="interactions database",
        task_name="database-monitor",
        on_change=on_change,
    )
