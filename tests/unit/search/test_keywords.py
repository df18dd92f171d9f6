"""One BM25 for both backends: the tokenizer (Snowball stop words and stemmer), the BM25
formulas, and Qdrant's sparse vectors built from them."""

from __future__ import annotations

import math

import pytest

from ragmeshd.search.backends.bm25_planner import sufficient_sets
from ragmeshd.search.keywords import (
    bm25_idf,
    bm25_tf,
    passage_terms,
    sparse_passage,
    sparse_query,
    term_id,
    tokenize,
)


def test_tokenize_lowercases_drops_stop_words_and_snowball_stems() -> None:
    assert tokenize("The Cells of mice, and studies!") == ["cell", "mice", "studi"]
    assert tokenize("glass virus analysis") == ["glass", "virus", "analysi"]
    # Snowball, not a plural rule: verb forms and derivations meet their stem.
    assert tokenize("running runs generalization generalize") == [
        "run",
        "run",
        "general",
        "general",
    ]
    assert tokenize("under_score IL-6 β-cells") == ["score", "il", "6", "β", "cell"]


def test_passage_terms_count_frequencies_and_length_without_stop_words() -> None:
    terms = passage_terms("cells of cells and a protein")
    assert terms.frequencies == {"cell": 2, "protein": 1}
    assert terms.length == 3


def test_bm25_formulas() -> None:
    assert bm25_idf(1, 10) == pytest.approx(math.log((10 - 1 + 0.5) / 1.5 + 1))
    assert bm25_idf(10, 10) > 0  # never negative, even for a term in every passage
    norm = 1.2 * (1 - 0.75 + 0.75 * 6 / 3)
    assert bm25_tf(2, 6, k1=1.2, b=0.75, avg_length=3) == pytest.approx(2 * 2.2 / (2 + norm))


def test_term_ids_are_stable_32_bit() -> None:
    assert term_id("cell") == term_id("cell")
    assert term_id("cell") != term_id("cells")
    assert 0 <= term_id("anything") < 2**32


def test_sparse_passage_weights_are_bm25_term_frequencies() -> None:
    sparse = sparse_passage(passage_terms("cell cell protein"), k1=1.2, b=0.75, avg_length=3)
    weights = dict(zip(sparse.indices, sparse.values, strict=True))
    assert weights[term_id("cell")] == pytest.approx(bm25_tf(2, 3, k1=1.2, b=0.75, avg_length=3))
    assert weights[term_id("protein")] == pytest.approx(bm25_tf(1, 3, k1=1.2, b=0.75, avg_length=3))
    assert sparse.indices == sorted(sparse.indices)


def test_sparse_query_terms_are_distinct_with_weight_one() -> None:
    terms = sparse_query("cells cell the")
    assert terms.indices == [term_id("cell")]
    assert terms.values == [1.0]
    assert sparse_query("the of and").indices == []


def test_sufficient_sets_are_the_minimal_sets_reaching_theta() -> None:
    bounds = [5.0, 3.0, 2.0, 0.5]
    sets = sufficient_sets(bounds, theta=4.0)
    assert sets is not None
    assert sorted(sorted(s) for s in sets) == [[0], [1, 2]]
    # Brute force: every set of terms reaching theta contains one of them.
    for mask in range(16):
        chosen = {i for i in range(4) if mask >> i & 1}
        reaches = sum(bounds[i] for i in chosen) >= 4.0
        assert reaches == any(set(s) <= chosen for s in sets), chosen
    assert sufficient_sets(bounds, theta=11.0) == []
    assert sufficient_sets([1.0] * 12, theta=6.0) is None  # C(12, 6) sets: too many
