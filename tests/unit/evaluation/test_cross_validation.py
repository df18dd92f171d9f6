"""`ragmesh eval --folds`: folds, the choice on the other folds, and the paired bootstrap."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ragmeshd.evaluation.cross_validation import (
    DEFAULT_LABEL,
    GRID,
    bootstrap_interval,
    cross_validate,
    deal_folds,
    format_cross_validation,
    per_query_ndcg,
)

QUERIES = [f"q{n}" for n in range(23)]


def test_folds_partition_the_queries_reproducibly() -> None:
    folds = deal_folds(QUERIES, 5)
    assert sorted(q for fold in folds for q in fold) == sorted(QUERIES)
    assert {len(fold) for fold in folds} == {4, 5}
    assert deal_folds(list(reversed(QUERIES)), 5) == folds
    with pytest.raises(ValueError, match="--folds"):
        deal_folds(QUERIES, 1)
    with pytest.raises(ValueError, match="--folds"):
        deal_folds(QUERIES[:3], 5)


def test_a_better_fusion_is_chosen_and_its_gain_excludes_zero() -> None:
    rng = random.Random(1)
    default = {q: rng.random() * 0.8 for q in QUERIES}
    scores = {
        DEFAULT_LABEL: default,
        "hybrid better": {q: s + 0.1 for q, s in default.items()},
        "hybrid worse": {q: s - 0.1 for q, s in default.items()},
    }
    result = cross_validate(scores, 5)
    assert [fold.chosen for fold in result.folds] == ["hybrid better"] * 5
    assert result.gain == pytest.approx(0.1)
    assert result.gain_interval == pytest.approx((0.1, 0.1))
    assert result.mean_ndcg == pytest.approx(np.mean(list(default.values())) + 0.1)
    assert result.chosen_on_all == "hybrid better"
    text = "\n".join(format_cross_validation(result))
    assert "(excludes 0)" in text and "+0.1000" in text


def test_the_default_wins_ties() -> None:
    default = {q: 0.5 for q in QUERIES}
    result = cross_validate({"hybrid same": dict(default), DEFAULT_LABEL: default}, 5)
    assert {fold.chosen for fold in result.folds} == {DEFAULT_LABEL}
    assert result.gain == 0 and result.gain_interval == (0.0, 0.0)


def test_each_fold_matches_a_brute_force_choice() -> None:
    rng = random.Random(7)
    labels = [DEFAULT_LABEL, *(f"hybrid {spec}" for spec in GRID)]
    scores = {label: {q: rng.random() for q in QUERIES} for label in labels}
    result = cross_validate(scores, 4)
    differences = []
    for fold, held in zip(result.folds, deal_folds(QUERIES, 4), strict=True):
        train = [q for q in QUERIES if q not in held]
        means = {label: sum(scores[label][q] for q in train) / len(train) for label in labels}
        assert fold.chosen == max(means, key=lambda label: means[label])
        assert fold.heldout_ndcg == pytest.approx(
            sum(scores[fold.chosen][q] for q in held) / len(held)
        )
        differences += [scores[fold.chosen][q] - scores[DEFAULT_LABEL][q] for q in held]
    assert result.gain == pytest.approx(sum(differences) / len(differences))
    low, high = result.gain_interval
    assert low <= result.gain <= high


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_queries() -> None:
    rng = np.random.default_rng(3)
    few, many = rng.normal(0.02, 0.1, 50), rng.normal(0.02, 0.1, 2000)
    low, high = bootstrap_interval(few)
    assert low < float(np.mean(few)) < high
    wide = high - low
    low, high = bootstrap_interval(many)
    assert high - low < wide


def test_per_query_ndcg() -> None:
    qrels = {"a": {"d1"}, "b": {"d2"}}
    assert per_query_ndcg({"a": ["d1", "d9"]}, qrels, 10) == {"a": 1.0, "b": 0.0}
