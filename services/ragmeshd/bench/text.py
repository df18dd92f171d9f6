"""Text for `ragmesh bench search`.

"zipf" (the default) is shaped like real text: a vocabulary of VOCABULARY made-up words
(3 to 10 letters, seeded, none of them a stop word) whose frequencies follow Zipf's law
(the r-th commonest word has probability proportional to 1 / r, as in natural language),
passages of PASSAGE_WORDS words and queries of QUERY_WORDS words drawn from the same
distribution. Common words then occur in most passages and rare ones in a handful, which is
what makes keyword search expensive. "synthetic" is the older text: a few words "w<n>" from
a 5,000-word Zipf vocabulary per passage, queries of a passage's first three words.
"""

from __future__ import annotations

import numpy as np

from ragmeshd.search.keywords import STOP_WORDS

TEXT_MODES = ("zipf", "synthetic")
VOCABULARY = 30_000
ZIPF_EXPONENT = 1.0
PASSAGE_WORDS = (50, 150)
QUERY_WORDS = (3, 10)
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
SYNTHETIC_VOCABULARY = 5000
SYNTHETIC_WORDS = 12


def vocabulary(rng: np.random.Generator, size: int = VOCABULARY) -> list[str]:
    """`size` distinct made-up lower-case words, none a stop word."""
    words: dict[str, None] = {}
    while len(words) < size:
        length = int(rng.integers(3, 11))
        word = "".join(rng.choice(_LETTERS, size=length))
        if word not in STOP_WORDS:
            words[word] = None
    return list(words)


def zipf_probabilities(size: int, exponent: float = ZIPF_EXPONENT) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    return weights / weights.sum()


class TextSource:
    """Seeded passages and queries of one text mode."""

    def __init__(self, mode: str, rng: np.random.Generator) -> None:
        self.mode = mode
        self._rng = rng
        if mode == "zipf":
            self._words = vocabulary(rng)
        else:
            self._words = [f"w{i}" for i in range(SYNTHETIC_VOCABULARY)]
        self._cumulative = np.cumsum(zipf_probabilities(len(self._words)))

    def _draw(self, count: int) -> str:
        # Inverse-CDF sampling (rng.choice with p= re-sums 30,000 weights on every call).
        picks = np.searchsorted(self._cumulative, self._rng.random(count) * self._cumulative[-1])
        words = self._words
        return " ".join([words[i] for i in np.minimum(picks, len(words) - 1).tolist()])

    def sentence(self, words: int) -> str:
        """`words` words drawn from the distribution."""
        return self._draw(words)

    def passages(self, count: int) -> list[str]:
        if self.mode == "synthetic":
            return [self._draw(SYNTHETIC_WORDS) for _ in range(count)]
        low, high = PASSAGE_WORDS
        return [self._draw(int(n)) for n in self._rng.integers(low, high + 1, size=count)]

    def queries(self, count: int, passages: list[str]) -> list[str]:
        if self.mode == "synthetic":
            picks = self._rng.integers(0, len(passages), size=count)
            return [" ".join(passages[int(i)].split()[:3]) for i in picks]
        low, high = QUERY_WORDS
        return [self._draw(int(n)) for n in self._rng.integers(low, high + 1, size=count)]

    def describe(self) -> str:
        if self.mode == "synthetic":
            return f"synthetic text ({SYNTHETIC_WORDS} words of {SYNTHETIC_VOCABULARY})"
        return (
            f"Zipf text (s={ZIPF_EXPONENT:g}, {len(self._words)} words; passages of"
            f" {PASSAGE_WORDS[0]}-{PASSAGE_WORDS[1]} words, queries of"
            f" {QUERY_WORDS[0]}-{QUERY_WORDS[1]})"
        )
