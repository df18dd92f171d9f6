"""Keeps a service's gRPC health in step with a dependency it cannot work without.

After start-up a background task probes the dependency every `interval_s`. When a probe
fails the service turns NOT_SERVING (so Envoy and `ragmesh up` route around it); when probes
succeed again it turns SERVING by itself, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping


class DependencyMonitor:
    def __init__(
        self,
        probe: Callable[[], Awaitable[str | None]],
        *,
        interval_s: float,
        set_serving: Callable[[bool], Awaitable[None]],
        log: logging.Logger,
        what: str,
        task_name: str,
        log_fields: Mapping[str, object] | None = None,
        on_change: Callable[[float | None], None] | None = None,
    ) -> None:
        # None when the dependency answers; otherwise why not ("" when there is no detail,
        # else logged as the outage's `error`).
        self._probe = probe
        self._interval_s = interval_s
        self._set_serving = set_serving
        self._log = log
        # What the log lines call the dependency: "<what> not answering", "... answering again".
        self._what = what
        self._task_name = task_name
        self._log_fields = dict(log_fields or {})
        # Called with the time.monotonic() the dependency went down, or None when it is back.
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.available = True

    def start(self) -> asyncio.Task[None]:
        """Start probing; the task (a server watches it: it never ends by itself)."""
        self._task = asyncio.create_task(self._loop(), name=self._task_name)
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check(self) -> bool:
        """Probe once and flip health if the answer changed; returns availability."""
        try:
            error = await self._probe()
        except Exception as exc:  # a probe's own bug counts as "down", never ends the loop
            self._log.exception(f"{self._what} probe failed", extra=self._log_fields)
            error = f"{type(exc).__name__}: {exc}"
        available = error is None
        if available != self.available:
            self.available = available
            if available:
                self._log.info(f"{self._what} answering again", extra=self._log_fields)
                if self._on_change is not None:
                    self._on_change(None)
            else:
                fields = {**self._log_fields, **({"error": error} if error else {})}
                self._log.warning(f"{self._what} not answering", extra=fields)
                if self._on_change is not None:
                    self._on_change(time.monotonic())
            await self._set_serving(available)
        return available

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check()
