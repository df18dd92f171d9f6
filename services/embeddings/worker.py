"""The model in a process of its own.

The server's event loop and the model's Python code (the glue between torch kernels) would
otherwise share one interpreter lock; in a separate process the model never waits for the
loop. Measured side by side on 2 cores (docs/benchmarks.md): +17 % texts/s and a lower p99.

The server talks to it over a pipe, one request at a time (a lock keeps the batcher's thread
and a token count from interleaving): ("encode" | "count", texts) → ("ok", result) or
("error", message). The process loads and checks the model before it reports ready, and
exits when the pipe closes, so it never outlives the server.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any

from services.embeddings.model import EncodedText, Encoder

# How long a stopping server waits for the model process before killing it.
STOP_TIMEOUT_S = 10.0


def _serve_model(
    connection: Connection,
    model_path: str,
    device: str,
    slice_overhead_tokens: float,
    runtime: str,
    runtime_cache_dir: str,
) -> None:
    try:
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
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve_model,
            args=(child_end, model_path, device, slice_overhead_tokens, runtime, runtime_cache_dir),
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

    def _reply(self) -> Any:
        try:
            status, payload = self._connection.recv()
        except EOFError:
            self._process.join(1)
            raise RuntimeError(
                f"the model process exited (exit code {self._process.exitcode})"
            ) from None
        if status == "error":
            raise RuntimeError(payload)
        return payload

    def _call(self, operation: str, texts: list[str]) -> Any:
        with self._lock:
            self._connection.send((operation, texts))
            return self._reply()

    def encode(self, texts: list[str]) -> list[EncodedText]:
        return list(self._call("encode", texts))

    def count_tokens(self, texts: list[str]) -> list[int]:
        return list(self._call("count", texts))

    def close(self) -> None:
        """Close the pipe (the process then exits) and wait for it."""
        self._connection.close()
        self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
