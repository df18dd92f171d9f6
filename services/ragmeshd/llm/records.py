"""The engine's records and errors: what a caller asks, what a generation reports, and the
failures the servicer maps to status codes."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("system", "user", "assistant")

# Why a generation ended.
FINISH_END_OF_TEXT = "end_of_text"
FINISH_STOP_SEQUENCE = "stop_sequence"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"


class QueueFullError(Exception):
    """The model is busy and `max_waiting` callers already wait for it."""


class NotReadyError(Exception):
    """The model is not loaded, or its warm-up has not passed yet."""


class PromptTooLongError(ValueError):
    """The formatted prompt leaves no room in the context window for a reply."""


@dataclass(frozen=True)
class ChatTurn:
    """One message of a conversation: role is "system", "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class GenerationParams:
    """What a caller asks of one generation."""

    max_tokens: int
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class GenerationStats:
    """How a generation went; the last event of every `generate` stream."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    # From the start of generation (after the queue) to the first token.
    time_to_first_token_s: float
    # From the start of generation to its end.
    generation_s: float
    # Time spent waiting in the queue for the model.
    queue_s: float
    # Completion tokens per second, from the first token to the last.
    tokens_per_second: float
