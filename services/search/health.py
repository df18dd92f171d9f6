"""Keeps the search service's gRPC health in step with its document store.

After start-up a background task pings the store every `interval_s`. When a ping fails the
service turns NOT_SERVING (so Envoy and `ragmesh up` route around it) and its RPCs answer
UNAVAILABLE at once; when pings succeed again it turns SERVING by itself. The backend
replaces its stale connections on a failed ping, so recovery needs no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from services.search.backends.base import SearchBackend

_log = logging.getLogger("ragmesh.search.health")


class StoreMonitor:
    def __init__(
        self,
        backend: SearchBackend,
        *,
        interval_s: float,
        set_serving: Callable[[bool], Awaitable[None]],
        on_change: Callable[[float | None], None],
    ) -> None:
        self._backend = backend
        self._interval_s = interval_s
        self._set_serving = set_serving
        # Called with the time.monotonic() the store went down, or None when it is back.
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.available = True

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="store-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check(self) -> bool:
        """Ping once and flip health if the answer changed; returns availability."""
        try:
            await self._backend.ping()
            error = ""
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        available = not error
        if available != self.available:
            self.available = available
            if available:
                _log.info("store answering again", extra={"backend": self._backend.name})
                self._on_change(None)
            else:
                _log.warning(
                    "store not answering", extra={"backend": self._backend.name, "error": error}
                )
                self._on_change(time.monotonic())
            await self._set_serving(available)
        return available

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check()
