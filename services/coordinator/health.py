"""Keeps the coordinator's gRPC health in step with its database: a ping every
`interval_s`; a failed one turns the server NOT_SERVING (Envoy and `ragmesh up` route
around it), and the first answer after that turns it SERVING again, without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from services.coordinator.store import InteractionStore

_log = logging.getLogger("ragmesh.coordinator.health")


class DatabaseMonitor:
    def __init__(
        self,
        store: InteractionStore,
        *,
        interval_s: float,
        timeout_s: float,
        set_serving: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._store = store
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._set_serving = set_serving
        self._task: asyncio.Task[None] | None = None
        self.available = True

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="database-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check(self) -> bool:
        available = await self._store.ping(self._timeout_s)
        if available != self.available:
            self.available = available
            if available:
                _log.info("interactions database answering again")
            else:
                _log.warning("interactions database not answering")
            await self._set_serving(available)
        return available

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check()
