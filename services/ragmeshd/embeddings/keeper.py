"""Keeps a working model process behind the embeddings server.

When the model process dies (noticed at once: the event loop watches its sentinel) or a
batch hangs (the batcher's time limit), the keeper turns the server NOT_SERVING, kills the
process if it still runs, fails every queued call with ModelUnavailableError (the servicer
answers UNAVAILABLE, which Envoy may retry on another replica), loads a new process with the
load retry policy, and turns the server SERVING again once that one passed its self-test.
While it is replaced, new calls fail at once too: nobody waits for a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ragmeshd.embeddings.model import EncodedText
from ragmeshd.embeddings.worker import ModelProcess, ModelUnavailableError

_log = logging.getLogger("ragmesh.embeddings.keeper")

_RESTARTING = "the embedding model is being restarted; retry shortly"


class ModelKeeper:
    def __init__(
        self,
        load: Callable[[], Awaitable[ModelProcess]],
        *,
        set_serving: Callable[[bool], Awaitable[None]],
        watch: Callable[[asyncio.Future[Any], str], None],
    ) -> None:
        # Starts a model process (retrying with backoff) or raises when it cannot.
        self._load = load
        self._set_serving = set_serving
        # The server's watch: a replacement that fails for good stops the server.
        self._watch = watch
        # Fails the calls waiting for the model (the batcher's fail_queued); returns how many.
        self.on_lost: Callable[[Exception], int] = lambda error: 0
        self.encoder: ModelProcess | None = None
        self.replacements = 0
        self._replacing: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._install(await self._load())

    def _install(self, encoder: ModelProcess) -> None:
        self.encoder = encoder
        asyncio.get_running_loop().add_reader(encoder.sentinel, self._ended, encoder)

    def _ended(self, encoder: ModelProcess) -> None:
        asyncio.get_running_loop().remove_reader(encoder.sentinel)
        if encoder is self.encoder and not self._closing:
            self.replace(f"the model process ended ({_exit_of(encoder)})")

    # Called from the batcher's worker thread and from token counting (asyncio.to_thread).
    def encode(self, texts: list[str]) -> list[EncodedText]:
        encoder = self.encoder
        if encoder is None:
            raise ModelUnavailableError(_RESTARTING)
        return encoder.encode(texts)

    def count_tokens(self, texts: list[str]) -> list[int]:
        encoder = self.encoder
        if encoder is None:
            raise ModelUnavailableError(_RESTARTING)
        return encoder.count_tokens(texts)

    def on_batch_timeout(self) -> None:
        self.replace("a batch took longer than the time limit (the model hung)")

    def replace(self, reason: str) -> None:
        """Replace the model process (once, however many failures report it)."""
        if self._closing or (self._replacing is not None and not self._replacing.done()):
            return
        self._replacing = asyncio.create_task(self._replace(reason), name="model-replacement")
        self._watch(self._replacing, "model replacement")

    async def _replace(self, reason: str) -> None:
        old, self.encoder = self.encoder, None
        started = time.perf_counter()
        _log.error(
            "model process failed; replacing it",
            extra={"reason": reason, "pid": old.pid if old else None},
        )
        await self._set_serving(False)
        if old is not None:
            asyncio.get_running_loop().remove_reader(old.sentinel)
            # The kill wakes the worker thread waiting on the old process at once.
            await asyncio.to_thread(old.kill)
        failed = self.on_lost(ModelUnavailableError(_RESTARTING))
        _log.warning("queued calls failed as UNAVAILABLE", extra={"calls": failed})
        new = await self._load()
        if self._closing:
            await asyncio.to_thread(new.close)
            return
        self._install(new)
        self.replacements += 1
        await self._set_serving(True)
        _log.info(
            "model process replaced",
            extra={
                "pid": new.pid,
                "replacements": self.replacements,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    async def close(self) -> None:
        """Stop the model process (the batcher has finished the queued work)."""
        self._closing = True
        if self._replacing is not None and not self._replacing.done():
            self._replacing.cancel()
            await asyncio.gather(self._replacing, return_exceptions=True)
        encoder, self.encoder = self.encoder, None
        if encoder is not None:
            asyncio.get_running_loop().remove_reader(encoder.sentinel)
            await asyncio.to_thread(encoder.close)


def _exit_of(encoder: ModelProcess) -> str:
    return encoder.exit_description
