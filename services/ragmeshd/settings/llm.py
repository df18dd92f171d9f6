"""Settings of the llm service (`[llm]`, RAGMESH_LLM__*)."""

from __future__ import annotations

from pydantic import Field, model_validator

from ragmeshd import defaults
from ragmeshd.settings.core import Section


class LlmSettings(Section):
    """The llm server: a llama.cpp model, one generation at a time, a bounded wait queue."""

    listen: str = defaults.LLM_LISTEN
    # Prometheus /metrics on loopback; empty turns it off.
    metrics_listen: str = defaults.LLM_METRICS_LISTEN
    # A .gguf model file; empty means the packaged SmolLM2-135M-Instruct (Q4_1).
    model_path: str = ""
    # The context window in tokens: prompt and reply together must fit in it.
    context_window_tokens: int = Field(defaults.LLM_CONTEXT_WINDOW_TOKENS, ge=64, le=131_072)
    # CPU threads generating; 0 means the CPUs this process may use.
    threads: int = Field(defaults.LLM_THREADS, ge=0, le=256)
    # Prompt tokens evaluated per forward pass.
    batch_tokens: int = Field(defaults.LLM_BATCH_TOKENS, ge=8)
    # Requests that may wait while the model generates another; one more is refused at once
    # with RESOURCE_EXHAUSTED.
    max_waiting: int = Field(defaults.LLM_MAX_WAITING, ge=0, le=1024)
    # Reply length: what a request gets when it asks for 0, and the most it may ask for.
    default_max_tokens: int = Field(defaults.LLM_DEFAULT_MAX_TOKENS, ge=1)
    max_tokens_limit: int = Field(defaults.LLM_MAX_TOKENS_LIMIT, ge=1)
    # Sampling temperature when a request sets none.
    default_temperature: float = Field(defaults.LLM_DEFAULT_TEMPERATURE, ge=0, le=2)
    # Request limits.
    max_messages: int = Field(defaults.LLM_MAX_MESSAGES, ge=1)
    max_message_chars: int = Field(defaults.LLM_MAX_MESSAGE_CHARS, ge=1)
    max_stop_sequences: int = Field(defaults.LLM_MAX_STOP_SEQUENCES, ge=0)
    max_stop_sequence_chars: int = Field(defaults.LLM_MAX_STOP_SEQUENCE_CHARS, ge=1)
    # Envoy's cap on calls in flight to one replica: the one generating plus its queue, with
    # room for Info calls; past it Envoy refuses at once with UNAVAILABLE.
    envoy_max_requests: int = Field(defaults.LLM_ENVOY_MAX_REQUESTS, ge=1)

    @model_validator(mode="after")
    def _consistent_llm(self) -> LlmSettings:
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens must not exceed max_tokens_limit")
        if self.max_tokens_limit >= self.context_window_tokens:
            raise ValueError("max_tokens_limit must be below context_window_tokens")
        return self
