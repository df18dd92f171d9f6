"""nDCG@k and Recall@k with binary relevance, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from ragmeshd.search.metrics import mean_over_queries, ndcg_at_k, recall_at_k


def test_ndcg_perfect_and_empty() -> None:
    assert ndcg_at_k(["a", "b", "x"], {"a", "b"}, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], {"a"}, 10) == 0.0
    assert ndcg_at_k([], {"a"}, 10) == 0.0


def test_ndcg_hand_computed() -> None:
    # Relevant at ranks 2 and 4 of 2 relevant: DCG = 1/log2(3) + 1/log2(5);
    # IDCG = 1/log2(2) + 1/log2(3).
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "y", "b"], {"a", "b"}, 10) == pytest.approx(expected)
    assert expected == pytest.approx(0.6509209298)


def test_ndcg_cuts_at_k_and_ideal_uses_min_of_relevant_and_k() -> None:
    # Three relevant, k = 2, one hit at rank 2: DCG = 1/log2(3); IDCG = 1 + 1/log2(3).
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "b", "c"], {"a", "b", "c"}, 2) == pytest.approx(expected)


def test_duplicates_count_once() -> None:
    assert ndcg_at_k(["a", "a"], {"a", "b"}, 10) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert recall_at_k(["a", "a"], {"a", "b"}, 10) == 0.5


def test_recall_hand_computed() -> None:
    assert recall_at_k(["a", "x", "b"], {"a", "b", "c", "d"}, 100) == 0.5
    assert recall_at_k(["a", "x", "b"], {"a", "b"}, 2) == 0.5


def test_no_relevant_documents_is_undefined() -> None:
    with pytest.raises(ValueError):
        ndcg_at_k(["a"], set(), 10)
    with pytest.raises(ValueError):
        recall_at_k(["a"], set(), 10)


def test_mean_over_queries_skips_unjudged_and_counts_missing_rankings_as_zero() -> None:
    qrels = {"q1": {"a"}, "q2": {"b"}, "q3": set()}
    rankings = {"q1": ["a"], "q3": ["z"]}
    assert mean_over_queries(rankings, qrels, "ndcg", 10) == pytest.approx(0.5)
    assert mean_over_queries(rankings, qrels, "recall", 100) == pytest.approx(0.5)
