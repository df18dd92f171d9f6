"""Checks on Embed requests; each failure names the offending input and the limit."""

from __future__ import annotations

from collections.abc import Sequence


class InvalidRequestError(ValueError):
    """The request breaks a documented limit; the message says which and how."""


def check_inputs(inputs: Sequence[str], *, max_client_batch: int, max_input_chars: int) -> None:
    if not inputs:
        raise InvalidRequestError(f"inputs is empty: send 1 to {max_client_batch} texts")
    if len(inputs) > max_client_batch:
        raise InvalidRequestError(
            f"inputs has {len(inputs)} texts; the limit is {max_client_batch} per call"
            " (use EmbedStream for bulk work)"
        )
    for index, text in enumerate(inputs):
        if not text.strip():
            raise InvalidRequestError(f"inputs[{index}] is empty or only whitespace")
        if len(text) > max_input_chars:
            raise InvalidRequestError(
                f"inputs[{index}] has {len(text)} characters; the limit is {max_input_chars}"
            )


def check_token_counts(token_counts: Sequence[int], *, max_sequence_length: int) -> None:
    """With truncate=false, every input must fit the model's window."""
    for index, count in enumerate(token_counts):
        if count > max_sequence_length:
            raise InvalidRequestError(
                f"inputs[{index}] is {count} tokens long; the model's window is"
                f" {max_sequence_length} tokens (set truncate=true to cut it to fit)"
            )
