"""DBSF as Qdrant defines it, against a brute-force oracle written from the definition.

Qdrant (lib/segment/src/common/score_fusion.rs): each list's scores are normalised by
(s - (mean - 3 sd)) / (6 sd), sd the sample standard deviation (n - 1), without clipping; a
list of one point, or of equal scores, gives 0.5; the fused score of a point is the weighted
sum over the lists it is in.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragmeshd.search.fusion import fuse_passages, normalized_scores, score_fusion
from ragmeshd.search.records import FusionMethod, FusionParams, PassageHit


def oracle(
    lists: Sequence[Sequence[tuple[Hashable, float]]], weights: Sequence[float]
) -> dict[Hashable, float]:
    fused: dict[Hashable, float] = {}
    for ranking, weight in zip(lists, weights, strict=True):
        values = [score for _, score in ranking]
        if len(values) < 2 or statistics.stdev(values) == 0:
            normalised = [0.5] * len(values)
        else:
            low = statistics.mean(values) - 3 * statistics.stdev(values)
            high = statistics.mean(values) + 3 * statistics.stdev(values)
            normalised = [(v - low) / (high - low) for v in values]
        for (key, _), value in zip(ranking, normalised, strict=True):
            fused[key] = fused.get(key, 0.0) + weight * value
    return fused


# Rounded: two scores are then equal (deviation exactly 0 in both computations) or clearly
# apart; unrounded neighbours gave a deviation of 0 in one computation and 1e-15 in the other.
scores = st.floats(-50, 50, allow_nan=False, allow_infinity=False).map(lambda v: round(v, 3))
ranking = st.dictionaries(st.sampled_from("abcdefghijkl"), scores, max_size=12).map(
    lambda items: sorted(items.items(), key=lambda item: -item[1])
)


@given(ranking, ranking, st.floats(0, 100), st.floats(0, 100))
def test_dbsf_matches_the_brute_force_oracle(
    dense: list[tuple[str, float]], keyword: list[tuple[str, float]], wd: float, wk: float
) -> None:
    fused = score_fusion([dense, keyword], [wd, wk], FusionMethod.DBSF)
    expected = oracle([dense, keyword], [wd, wk])
    assert {item.key: item.score for item in fused} == pytest.approx(expected, abs=1e-6)
    assert [item.score for item in fused] == sorted((item.score for item in fused), reverse=True)


def test_dbsf_hand_computed_and_unclipped() -> None:
    # mean 2, sample sd 1: low -1, high 5.
    assert normalized_scores([1.0, 2.0, 3.0], FusionMethod.DBSF) == pytest.approx(
        [2 / 6, 3 / 6, 4 / 6]
    )
    # Twenty equal scores and one outlier: the outlier lies past mean + 3 sd and is kept > 1.
    outlier = normalized_scores([100.0] + [0.0] * 20, FusionMethod.DBSF)
    assert outlier[0] > 1
    assert normalized_scores([7.0], FusionMethod.DBSF) == [0.5]
    assert normalized_scores([4.0, 4.0], FusionMethod.DBSF) == [0.5, 0.5]
    assert normalized_scores([], FusionMethod.DBSF) == []


def test_fuse_passages_selects_dbsf() -> None:
    def hit(document_id: str, score: float) -> PassageHit:
        return PassageHit(document_id, 0, document_id, {}, score)

    dense = [hit("a", 0.9), hit("b", 0.8), hit("c", 0.1)]
    keyword = [hit("c", 20.0), hit("b", 10.0)]
    params = FusionParams(60, 1.0, 1.0, FusionMethod.DBSF)
    fused = fuse_passages(dense, keyword, params)
    expected = oracle(
        [[(h.key, h.score) for h in dense], [(h.key, h.score) for h in keyword]], [1, 1]
    )
    assert {r.passage.key: r.score for r in fused} == pytest.approx(expected)
