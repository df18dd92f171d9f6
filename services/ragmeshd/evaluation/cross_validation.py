"""`ragmesh eval --folds N`: choose HYBRID's fusion by cross-validation on one split.

The split's queries are dealt into N folds (a seeded shuffle). For each fold the fusion
(method and weights) with the best mean nDCG@10 on the other folds is chosen from the
candidates, today's default among them (it wins ties), and scored on the held-out fold. Each
query is thus scored once, by a fusion chosen without it; the gain over the default is the
mean of the paired per-query differences, with a percentile bootstrap 95% interval over the
queries. Nothing but the one split chooses anything.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ragmeshd.search.metrics import ndcg_at_k

# The server's default HYBRID (no fusion fields in the request): the report's "hybrid" row.
DEFAULT_LABEL = "hybrid"
# Candidates beside the default, as `--fusion` specs: RRF and the three score fusions.
GRID = (
    "rrf:1:1:60",
    "rrf:1:1:20",
    "rrf:1:1.5:60",
    "rrf:1.5:1:60",
    *(
        f"{method}:{dense:g}:{round(1 - dense, 2):g}"
        for method in ("min_max", "distribution", "dbsf")
        for dense in (0.3, 0.4, 0.5, 0.6)
    ),
)
SEED = 25
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Fold:
    """One held-out fold: the fusion chosen on the others and both scores on this one."""

    queries: int
    chosen: str
    train_ndcg: float
    heldout_ndcg: float
    default_ndcg: float


@dataclass
class CrossValidation:
    folds: list[Fold] = field(default_factory=list)
    mean_ndcg: float = 0.0
    default_ndcg: float = 0.0
    gain: float = 0.0
    gain_interval: tuple[float, float] = (0.0, 0.0)
    chosen_on_all: str = DEFAULT_LABEL


def per_query_ndcg(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, set[str]], k: int
) -> dict[str, float]:
    """Each judged query's nDCG@k (a missing ranking counts as empty)."""
    return {q: ndcg_at_k(rankings.get(q, ()), relevant, k) for q, relevant in qrels.items()}


def deal_folds(query_ids: Sequence[str], count: int, seed: int = SEED) -> list[list[str]]:
    """The queries shuffled with `seed` and dealt round-robin into `count` folds."""
    if not 2 <= count <= len(query_ids):
        raise ValueError(f"--folds must be 2 to the number of queries ({len(query_ids)})")
    shuffled = sorted(query_ids)
    random.Random(seed).shuffle(shuffled)  # nosec B311: a reproducible split, not a secret
    return [shuffled[start::count] for start in range(count)]


def _best(scores: Mapping[str, Mapping[str, float]], queries: Sequence[str]) -> tuple[str, float]:
    """The label with the best mean over `queries`; the default first, so it wins ties."""
    labels = [DEFAULT_LABEL, *(label for label in scores if label != DEFAULT_LABEL)]
    means = {label: float(np.mean([scores[label][q] for q in queries])) for label in labels}
    best = max(labels, key=lambda label: means[label])  # first maximum: the default on ties
    return best, means[best]


def bootstrap_interval(
    differences: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """The percentile bootstrap 95% interval of the mean of paired differences."""
    values = np.asarray(differences, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def cross_validate(
    scores: Mapping[str, Mapping[str, float]], count: int, seed: int = SEED
) -> CrossValidation:
    """`scores`: label → query → nDCG@10, the default's label among them, every label
    scoring the same queries."""
    if DEFAULT_LABEL not in scores:
        raise ValueError(f"the default ({DEFAULT_LABEL!r}) must be among the candidates")
    queries = list(scores[DEFAULT_LABEL])
    result = CrossValidation()
    differences: list[float] = []
    heldout_scores: list[float] = []
    for fold in deal_folds(queries, count, seed):
        held = set(fold)
        chosen, train = _best(scores, [q for q in queries if q not in held])
        heldout = [scores[chosen][q] for q in fold]
        default = [scores[DEFAULT_LABEL][q] for q in fold]
        result.folds.append(
            Fold(len(fold), chosen, train, float(np.mean(heldout)), float(np.mean(default)))
        )
        heldout_scores.extend(heldout)
        differences.extend(h - d for h, d in zip(heldout, default, strict=True))
    result.mean_ndcg = float(np.mean(heldout_scores))
    result.default_ndcg = float(np.mean(list(scores[DEFAULT_LABEL].values())))
    result.gain = float(np.mean(differences))
    result.gain_interval = bootstrap_interval(differences, seed=seed)
    result.chosen_on_all = _best(scores, queries)[0]
    return result


def format_cross_validation(result: CrossValidation) -> list[str]:
    lines = [
        f"{len(result.folds)}-fold cross-validation of HYBRID's fusion (chosen on the other"
        f" folds, nDCG@10 on the held-out one; default = {DEFAULT_LABEL!r}):",
        f"{'fold':>4} {'queries':>7} {'chosen':<28} {'train':>7} {'held-out':>8} {'default':>8}",
    ]
    for number, fold in enumerate(result.folds, start=1):
        lines.append(
            f"{number:>4} {fold.queries:>7} {fold.chosen:<28} {fold.train_ndcg:7.4f}"
            f" {fold.heldout_ndcg:8.4f} {fold.default_ndcg:8.4f}"
        )
    low, high = result.gain_interval
    verdict = "excludes 0" if low > 0 or high < 0 else "includes 0"
    lines += [
        f"held-out mean nDCG@10 {result.mean_ndcg:.4f}; default {result.default_ndcg:.4f}",
        f"gain over the default {result.gain:+.4f}, paired bootstrap 95% interval"
        f" [{low:+.4f}, {high:+.4f}] ({verdict})",
        f"chosen on the whole split: {result.chosen_on_all}",
    ]
    return lines
