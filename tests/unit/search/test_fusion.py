"""Weighted reciprocal rank fusion and one-hit-per-document, against hand-computed cases."""

from __future__ import annotations

import pytest

from ragmeshd.search.fusion import (
    fuse_passages,
    normalized_scores,
    one_per_document,
    ranked_dense,
    reciprocal_rank_fusion,
    score_fusion,
)
from ragmeshd.search.records import FusionMethod, FusionParams, PassageHit, RankedHit


def hit(document_id: str, passage_index: int = 0, score: float = 0.0) -> PassageHit:
    return PassageHit(document_id, passage_index, f"{document_id}/{passage_index}", {}, score)


def test_rrf_matches_hand_computed_scores() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], [1.0, 1.0], k=60)
    scores = {item.key: item.score for item in fused}
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["c"] == pytest.approx(1 / 63)
    assert scores["d"] == pytest.approx(1 / 62)
    assert [item.key for item in fused] == ["b", "a", "d", "c"]
    assert {item.key: item.ranks for item in fused} == {
        "a": (1, 0),
        "b": (2, 1),
        "c": (3, 0),
        "d": (0, 2),
    }


def test_weights_scale_each_ranking() -> None:
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], [1.0, 3.0], k=1)
    scores = {item.key: item.score for item in fused}
    assert scores["a"] == pytest.approx(1 / 2 + 3 / 3)
    assert scores["b"] == pytest.approx(1 / 3 + 3 / 2)
    assert [item.key for item in fused] == ["b", "a"]


def test_zero_weight_ranking_only_breaks_nothing() -> None:
    fused = reciprocal_rank_fusion([["a", "b"], ["b"]], [1.0, 0.0], k=60)
    assert [item.key for item in fused] == ["a", "b"]
    assert fused[1].ranks == (2, 1)


def test_ties_go_to_the_best_single_rank_then_first_seen() -> None:
    # x is 1st in ranking 0, y 1st in ranking 1: equal scores, x seen first.
    fused = reciprocal_rank_fusion([["x"], ["y"]], [1.0, 1.0], k=60)
    assert [item.key for item in fused] == ["x", "y"]


def test_duplicate_within_a_ranking_counts_once() -> None:
    fused = reciprocal_rank_fusion([["a", "a", "b"]], [1.0], k=60)
    assert fused[0].score == pytest.approx(1 / 61)
    assert fused[1].ranks == (3,)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], [1.0, 1.0], k=60)
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], [1.0], k=0)


def test_fuse_passages_keeps_ranks_per_mode() -> None:
    dense = [hit("d1", 0, 0.9), hit("d2", 1, 0.8)]
    keyword = [hit("d2", 1, 7.0), hit("d3", 0, 5.0)]
    fused = fuse_passages(dense, keyword, FusionParams(k=60, dense_weight=1, keyword_weight=1))
    assert [(h.passage.document_id, h.dense_rank, h.keyword_rank) for h in fused] == [
        ("d2", 2, 1),
        ("d1", 1, 0),
        ("d3", 0, 2),
    ]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_one_per_document_keeps_the_best_passage_and_order() -> None:
    ranked = ranked_dense(
        [hit("a", 2, 0.9), hit("b", 0, 0.8), hit("a", 0, 0.7), hit("c", 1, 0.6), hit("d", 0, 0.5)]
    )
    best = one_per_document(ranked, top_k=3)
    assert [(h.passage.document_id, h.passage.passage_index, h.dense_rank) for h in best] == [
        ("a", 2, 1),
        ("b", 0, 2),
        ("c", 1, 4),
    ]
    assert all(isinstance(h, RankedHit) for h in best)


def test_min_max_score_fusion_matches_hand_computed_scores() -> None:
    dense = [("a", 0.9), ("b", 0.7), ("c", 0.5)]  # normalised 1, 0.5, 0
    keyword = [("b", 12.0), ("d", 4.0)]  # normalised 1, 0
    fused = score_fusion([dense, keyword], [0.6, 0.4], FusionMethod.MIN_MAX)
    scores = {item.key: item.score for item in fused}
    assert scores == pytest.approx({"a": 0.6, "b": 0.6 * 0.5 + 0.4, "c": 0.0, "d": 0.0})
    # b first; a next; c and d tie at 0: the better rank (c is 3rd, d 2nd) goes first.
    assert [item.key for item in fused] == ["b", "a", "d", "c"]
    assert {item.key: item.ranks for item in fused}["b"] == (2, 1)


def test_distribution_normalisation_uses_mean_and_three_deviations() -> None:
    scores = [1.0, 2.0, 3.0]
    deviation = (2 / 3) ** 0.5
    low, high = 2 - 3 * deviation, 2 + 3 * deviation
    assert normalized_scores(scores, FusionMethod.DISTRIBUTION) == pytest.approx(
        [(s - low) / (high - low) for s in scores]
    )
    assert normalized_scores([5.0, 5.0], FusionMethod.MIN_MAX) == [1.0, 1.0]
    assert normalized_scores([], FusionMethod.DISTRIBUTION) == []


def test_fuse_passages_dispatches_on_the_method() -> None:
    dense = [hit("a", score=0.9), hit("b", score=0.1)]
    keyword = [hit("b", score=30.0), hit("c", score=1.0)]
    rrf = fuse_passages(dense, keyword, FusionParams(60, 1.0, 1.0))
    assert [r.passage.document_id for r in rrf] == ["b", "a", "c"]
    # Score fusion sees that the dense scores are far apart and b's keyword score dominant.
    scored = fuse_passages(dense, keyword, FusionParams(60, 0.5, 0.5, FusionMethod.MIN_MAX))
    assert [r.passage.document_id for r in scored] == ["a", "b", "c"]
    assert [r.score for r in scored] == pytest.approx([0.5, 0.5, 0.0])
