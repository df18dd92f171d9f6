"""`ragmesh bench search`'s text: seeded, Zipf-shaped, never a stop word, of the stated sizes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ragmeshd.bench.text import (
    PASSAGE_WORDS,
    QUERY_WORDS,
    SYNTHETIC_WORDS,
    TextSource,
    vocabulary,
    zipf_probabilities,
)
from ragmeshd.search.keywords import STOP_WORDS


def test_vocabulary_is_distinct_made_up_words_and_no_stop_word() -> None:
    words = vocabulary(np.random.default_rng(1), size=2000)
    assert len(words) == len(set(words)) == 2000
    assert all(3 <= len(word) <= 10 and word.isalpha() and word.islower() for word in words)
    assert not STOP_WORDS & set(words)
    assert vocabulary(np.random.default_rng(1), size=2000) == words


def test_zipf_probabilities_fall_as_one_over_rank() -> None:
    p = zipf_probabilities(1000)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] / p[1] == pytest.approx(2.0)
    assert p[0] / p[9] == pytest.approx(10.0)
    assert np.all(np.diff(p) < 0)


def test_zipf_passages_and_queries_have_the_stated_sizes_and_shape() -> None:
    source = TextSource("zipf", np.random.default_rng(7))
    passages = source.passages(300)
    lengths = [len(passage.split()) for passage in passages]
    assert PASSAGE_WORDS[0] <= min(lengths) and max(lengths) <= PASSAGE_WORDS[1]
    queries = source.queries(100, passages)
    assert all(QUERY_WORDS[0] <= len(q.split()) <= QUERY_WORDS[1] for q in queries)
    # Zipf: the commonest word is far more frequent than the 100th commonest.
    counts = [n for _, n in Counter(" ".join(passages).split()).most_common()]
    assert counts[0] > 20 * counts[99]
    assert "Zipf text (s=1, 30000 words" in source.describe()
    again = TextSource("zipf", np.random.default_rng(7))
    assert again.passages(300) == passages


def test_synthetic_queries_are_a_passages_first_three_words() -> None:
    source = TextSource("synthetic", np.random.default_rng(3))
    passages = source.passages(50)
    assert all(len(p.split()) == SYNTHETIC_WORDS for p in passages)
    assert all(word.startswith("w") for p in passages for word in p.split())
    starts = {" ".join(p.split()[:3]) for p in passages}
    assert set(source.queries(20, passages)) <= starts
    assert source.describe() == f"synthetic text ({SYNTHETIC_WORDS} words of 5000)"
