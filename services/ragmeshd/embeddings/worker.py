"""The model in a process of its own.

The server's event loop and the model's Python code (the glue between torch kernels) would
otherwise share one interpreter lock; in a separate process the model never waits for the
loop. Measured side by side on 2 cores (docs/benchmarks.md): +17 % texts/s and a lower p99.

The server talks to it over a pipe, one request at a time (a lock keeps the batcher's thread
and a token count from interleaving): ("encode" | "count", texts) → ("ok", result) or
("error", message). The process loads and checks the model before it reports ready, and
exits when the pipe closes, so it never outlives the server. When it dies, every call on it
raises ModelUnavailableError; `kill` ends a hung one (ragmeshd/embeddings/keeper.py replaces
it).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from ragmeshd.embeddings.model import EncodedText, Encoder
from ragmeshd.runtime import metrics
from ragmeshd.runtime.startup import retry_at_startup

_log = logging.getLogger("ragmesh.embeddings.model")

# How long a stopping server waits for the model process before killing it.
STOP_TIMEOUT_S = 10.0


class ModelUnavailableError(Exception):
    """The model process is gone (died, killed as hung, or being replaced)."""


def _serve_model(
    connection: Connection,
    model_path: str,
    device: str,
    slice_overhead_tokens: float,
    runtime: str,
    runtime_cache_dir: str,
    cpu_threads: int = 0,
) -> None:
    try:
        # This process only runs the model: its runtimes stay within the threads given
        # (imported here: the runtimes bring torch, which the server process never loads).
        from ragmeshd.embeddings.runtimes import limit_cpu_threads

        limit_cpu_threads(cpu_threads)
        encoder = Encoder(model_path, device, slice_overhead_tokens, runtime, runtime_cache_dir)
        encoder.self_test()
    except Exception as exc:
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(
        (
            "ok",
            (
                encoder.name,
                encoder.dimensions,
                encoder.max_sequence_length,
                encoder.device,
                encoder.runtime,
                encoder.identity,
            ),
        )
    )
    while True:
        try:
            operation, texts = connection.recv()
        except EOFError:  # the server is gone
            return
        try:
            result: Any = (
                encoder.encode(texts) if operation == "encode" else encoder.count_tokens(texts)
            )
            connection.send(("ok", result))
        except Exception as exc:
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


class ModelProcess:
    """A loaded model in a child process; the same calls as Encoder."""

    def __init__(
        self,
        model_path: str,
        device: str,
        slice_overhead_tokens: float,
        *,
        runtime: str = "torch",
        runtime_cache_dir: str = "",
        cpu_threads: int = 0,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve_model,
            args=(
                child_end,
                model_path,
                device,
                slice_overhead_tokens,
                runtime,
                runtime_cache_dir,
                cpu_threads,
            ),
            name="ragmesh-model",
            daemon=True,
        )
        self._process.start()
        child_end.close()
        self._lock = threading.Lock()
        try:
            (
                self.name,
                self.dimensions,
                self.max_sequence_length,
                self.device,
                self.runtime,
                self.identity,
            ) = self._reply()
        except Exception:
            self.close()
            raise

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def sentinel(self) -> int:
        """A file descriptor that becomes readable when the process has ended."""
        return self._process.sentinel

    @property
    def exit_description(self) -> str:
        code = self._process.exitcode
        if code is None:
            return "still running"
        return f"signal {-code}" if code < 0 else f"exit code {code}"

    def _reply(self) -> Any:
        try:
            status, payload = self._connection.recv()
        except (EOFError, OSError):
            self._process.join(1)
            raise ModelUnavailableError(
                f"the model process ended ({self.exit_description}); it is being restarted"
            ) from None
        if status == "error":
            raise RuntimeError(payload)
        return payload

    def _call(self, operation: str, texts: list[str]) -> Any:
        with self._lock:
            if self._connection.closed:
                raise ModelUnavailableError("the model process was stopped")
            try:
                self._connection.send((operation, texts))
            except OSError:  # the pipe broke: the process is gone
                raise ModelUnavailableError(
                    "the model process ended; it is being restarted"
                ) from None
            return self._reply()

    def encode(self, texts: list[str]) -> list[EncodedText]:
        return list(self._call("encode", texts))

    def count_tokens(self, texts: list[str]) -> list[int]:
        return list(self._call("count", texts))

    def kill(self) -> None:
        """SIGKILL the process (a hung or dead one); calls waiting on it then fail at once.
        Then close the pipe, once no call is using it."""
        if self._process.exitcode is None:
            self._process.kill()
        self._process.join()
        with self._lock:
            self._connection.close()

    def close(self) -> None:
        """Close the pipe (the process then exits) and wait for it."""
        if not self._lock.acquire(timeout=STOP_TIMEOUT_S):  # a call hangs: end it
            self._process.kill()
            self._lock.acquire()
        try:
            self._connection.close()
        finally:
            self._lock.release()
        self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


async def load_encoder(
    model_path: str,
    device: str,
    slice_overhead_tokens: float,
    *,
    attempts: int,
    backoff_base_s: float,
    runtime: str = "torch",
    runtime_cache_dir: str = "",
    cpu_threads: int = 0,
) -> ModelProcess:
    """Start the model process (it loads and checks the model) off the event loop,
    retried at start-up (runtime/startup.py)."""
    started = time.perf_counter()

    async def start() -> ModelProcess:
        nonlocal started
        started = time.perf_counter()
        return await asyncio.to_thread(
            ModelProcess,
            model_path,
            device,
            slice_overhead_tokens,
            runtime=runtime,
            runtime_cache_dir=runtime_cache_dir,
            cpu_threads=cpu_threads,
        )

    try:
        encoder = await retry_at_startup(
            start,
            attempts=attempts,
            backoff_base_s=backoff_base_s,
            retry_on=(Exception,),
            log=_log,
            message="model load failed, retrying",
        )
    except Exception as exc:
        raise RuntimeError(
            f"could not load the embedding model after {attempts} attempts: {exc}"
        ) from exc
    metrics.MODEL_LOAD_SECONDS.set(time.perf_counter() - started)
    _log.info(
        "model loaded",
        extra={
            "model": encoder.name,
            "device": encoder.device,
            "runtime": encoder.runtime,
            "dimensions": encoder.dimensions,
            "load_seconds": round(time.perf_counter() - started, 3),
        },
    )
    return encoder
