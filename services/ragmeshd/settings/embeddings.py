"""Settings of the embeddings service (`[embeddings]`, RAGMESH_EMBEDDINGS__*)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ragmeshd import defaults
from ragmeshd.settings.core import Section


class EmbeddingsSettings(Section):
    """The embeddings server."""

    listen: str = defaults.EMBEDDINGS_LISTEN
    # Prometheus /metrics on loopback; empty turns it off.
    metrics_listen: str = defaults.EMBEDDINGS_METRICS_LISTEN
    # A local sentence-transformers model directory; empty means the packaged all-MiniLM-L6-v2.
    model_path: str = ""
    device: Literal["auto", "cpu", "cuda"] = defaults.DEVICE
    max_client_batch: int = Field(defaults.MAX_CLIENT_BATCH, ge=1, le=4096)
    max_input_chars: int = Field(defaults.MAX_INPUT_CHARS, ge=1)
    max_batch_texts: int = Field(defaults.MAX_BATCH_TEXTS, ge=1, le=4096)
    max_batch_delay_ms: float = Field(defaults.MAX_BATCH_DELAY_MS, ge=0)
    # Characters in a batch of bulk texts (writes); interactive calls wait at most one.
    bulk_batch_chars: int = Field(defaults.BULK_BATCH_CHARS, ge=1)
    slice_overhead_tokens: float = Field(defaults.SLICE_OVERHEAD_TOKENS, ge=0)
    max_queue_texts: int = Field(defaults.MAX_QUEUE_TEXTS, ge=1)
    # Load shedding (issue 9): a call whose texts would wait longer than this for the model
    # (queued texts / measured throughput) is refused at once with RESOURCE_EXHAUSTED.
    max_queue_wait_ms: float = Field(defaults.MAX_QUEUE_WAIT_MS, gt=0)
    # Load shedding in Envoy: calls Envoy sends one replica at once (its circuit breaker);
    # past it Envoy refuses at once with UNAVAILABLE, before the server spends CPU on them.
    envoy_max_requests: int = Field(defaults.EMBEDDINGS_ENVOY_MAX_REQUESTS, ge=1)
    # Messages one EmbedStream may send; past this it ends with RESOURCE_EXHAUSTED.
    max_stream_messages: int = Field(defaults.MAX_STREAM_MESSAGES, ge=1)
    model_load_attempts: int = Field(defaults.MODEL_LOAD_ATTEMPTS, ge=1)
    model_load_backoff_base_s: float = Field(defaults.MODEL_LOAD_BACKOFF_BASE_S, ge=0)
    # -- runtime and caching (issue 11; defaults.py explains) --
    runtime: Literal["auto", "torch", "onnx", "openvino"] = defaults.EMBEDDINGS_RUNTIME
    # Where converted models are kept; empty means STATE_DIR/models.
    runtime_cache_dir: str = ""
    # CPU threads of the model process; 0: every core the runtime sees (defaults.py).
    cpu_threads: int = Field(defaults.EMBEDDINGS_CPU_THREADS, ge=0)
    # The in-memory vector cache of each replica, in bytes; 0 turns it off.
    cache_max_bytes: int = Field(defaults.EMBEDDINGS_CACHE_MAX_BYTES, ge=0)
    # A shared cache tier, e.g. redis://127.0.0.1:6379/0; empty means none.
    cache_redis_url: str = ""
    cache_redis_ttl_s: int = Field(defaults.EMBEDDINGS_CACHE_REDIS_TTL_S, ge=1)
    # A batch the model process has not answered after this long is hung: the process is
    # killed and replaced (self-healing, issue 9).
    model_batch_timeout_s: float = Field(defaults.MODEL_BATCH_TIMEOUT_S, gt=0)
