"""Stop sequences over a stream of generated text.

The model produces text a token at a time; a stop sequence may arrive split over several
tokens. `split_at_stop` says how much of the text not yet sent may be sent now: everything
before a stop sequence that has appeared, or, when none has, everything but the longest tail
that could still grow into one (that tail is held back until the next token decides).
"""

from __future__ import annotations

from collections.abc import Sequence


def split_at_stop(pending: str, stops: Sequence[str]) -> tuple[str, str, bool]:
    """(text to send now, text to hold back, whether a stop sequence was reached).

    When a stop sequence was reached, the text to send ends just before it and nothing is
    held back (the generation ends there)."""
    best: tuple[int, int] | None = None  # (end, start) of the first stop completed
    for stop in stops:
        if not stop:
            continue
        at = pending.find(stop)
        if at != -1 and (best is None or (at + len(stop), at) < best):
            best = (at + len(stop), at)
    if best is not None:
        return pending[: best[1]], "", True
    held = 0
    for stop in stops:
        # The longest proper prefix of `stop` that `pending` ends with.
        for length in range(min(len(stop) - 1, len(pending)), held, -1):
            if pending.endswith(stop[:length]):
                held = length
                break
    return pending[: len(pending) - held], pending[len(pending) - held :], False
