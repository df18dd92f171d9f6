"""One generation, in the model's thread: llama.cpp yields a token at a time; the text goes
out in pieces (held back where a stop sequence may be starting), the caller's cancellation is
checked between tokens, and the run ends with its GenerationStats."""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ragmeshd.llm.records import (
    FINISH_CANCELLED,
    FINISH_END_OF_TEXT,
    FINISH_LENGTH,
    FINISH_STOP_SEQUENCE,
    GenerationParams,
    GenerationStats,
)
from ragmeshd.llm.stops import split_at_stop

# Sampling beyond temperature: llama.cpp's defaults, which suit small instruct models.
TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05
REPEAT_PENALTY = 1.1


@dataclass
class _Progress:
    """Where a generation stands, token by token."""

    started: float
    first_token_at: float
    last_token_at: float
    completion: int = 0
    finish: str = FINISH_LENGTH


def run_generation(
    model: Any,
    prompt: list[int],
    max_tokens: int,
    params: GenerationParams,
    queue_s: float,
    emit: Callable[[str], None],
    cancel: threading.Event,
) -> GenerationStats:
    """Generate with `model` (a llama_cpp.Llama) until end of text, a stop sequence,
    `max_tokens` or `cancel`; text pieces go to `emit`."""
    started = time.monotonic()
    progress = _Progress(started, started, started)
    if params.seed is not None:
        model.set_seed(params.seed)
    tokens = model.generate(
        prompt,
        top_k=TOP_K,
        top_p=TOP_P,
        min_p=MIN_P,
        temp=params.temperature,
        repeat_penalty=REPEAT_PENALTY,
    )
    try:
        _stream(model, tokens, max_tokens, params.stop, emit, cancel, progress)
    finally:
        tokens.close()
    streaming_s = progress.last_token_at - progress.first_token_at
    completion = progress.completion
    return GenerationStats(
        finish_reason=progress.finish,
        prompt_tokens=len(prompt),
        completion_tokens=completion,
        time_to_first_token_s=progress.first_token_at - started,
        generation_s=time.monotonic() - started,
        queue_s=queue_s,
        # The first token comes with the prompt's evaluation; the rate counts the rest.
        tokens_per_second=(completion - 1) / streaming_s if completion > 1 and streaming_s else 0.0,
    )


def _stream(
    model: Any,
    tokens: Any,
    max_tokens: int,
    stops: tuple[str, ...],
    emit: Callable[[str], None],
    cancel: threading.Event,
    progress: _Progress,
) -> None:
    import llama_cpp

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for token in tokens:
        progress.last_token_at = time.monotonic()
        if progress.completion == 0:
            progress.first_token_at = progress.last_token_at
        if cancel.is_set():
            progress.finish = FINISH_CANCELLED
            return
        if llama_cpp.llama_vocab_is_eog(model._model.vocab, token):
            progress.finish = FINISH_END_OF_TEXT
            break
        progress.completion += 1
        pending += decoder.decode(model.detokenize([token]))
        send, pending, stopped = split_at_stop(pending, stops)
        if send:
            emit(send)
        if stopped:
            progress.finish = FINISH_STOP_SEQUENCE
            return
        if progress.completion >= max_tokens:
            break
    pending += decoder.decode(b"", final=True)
    if pending:
        emit(pending)
