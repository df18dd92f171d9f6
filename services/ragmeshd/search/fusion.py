"""HYBRID's fusion of the dense and keyword rankings, and one hit per document.

RRF (Cormack, Clarke & Buettcher, 2009) scores an item by the sum over rankings of
weight / (k + rank), rank counting from 1; it needs no score calibration between rankings.
Score fusion keeps how far apart the scores are, which ranks alone lose: each ranking's
scores are normalised over its candidates, by min-max (best 1, worst 0) or by the
distribution (mean -/+ 3 standard deviations mapped to 0 and 1, clipped), or as Qdrant's
DBSF does (mean -/+ 3 sample standard deviations, n - 1, not clipped; one candidate or equal
scores give 0.5: lib/segment/src/common/score_fusion.rs), and the fused score is the
weighted sum (a ranking an item is absent from gives 0). The server's default method and
weights were chosen on SciFact's training split only (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ragmeshd.search.records import FusionMethod, FusionParams, PassageHit, RankedHit

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Fused(Generic[K]):
    """One item's fused score and its 1-based rank in each input ranking (0 = absent)."""

    key: K
    score: float
    ranks: tuple[int, ...]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]], weights: Sequence[float], k: int
) -> list[Fused[K]]:
    """Fuse rankings (best first, keys unique within each) into one, best first.

    Ties are broken by the best (lowest) rank in any ranking, then by first appearance.
    """
    if len(rankings) != len(weights):
        raise ValueError("one weight per ranking is needed")
    if k < 1:
        raise ValueError("k must be at least 1")
    scores: dict[K, float] = {}
    ranks: dict[K, list[int]] = {}
    for which, (ranking, weight) in enumerate(zip(rankings, weights, strict=True)):
        for position, key in enumerate(ranking, start=1):
            if key not in scores:
                scores[key] = 0.0
                ranks[key] = [0] * len(rankings)
            if ranks[key][which]:
                continue  # a duplicate within one ranking counts once, at its best rank
            ranks[key][which] = position
            scores[key] += weight / (k + position)
    order = {key: index for index, key in enumerate(scores)}

    def best_rank(key: K) -> int:
        return min(rank for rank in ranks[key] if rank)

    keys = sorted(scores, key=lambda key: (-scores[key], best_rank(key), order[key]))
    return [Fused(key, scores[key], tuple(ranks[key])) for key in keys]


def dbsf_normalized(scores: Sequence[float]) -> list[float]:
    """Qdrant's DBSF normalisation: (s - (mean - 3 sd)) / (6 sd), sd the sample deviation."""
    if len(scores) < 2:
        return [0.5] * len(scores)
    mean = sum(scores) / len(scores)
    deviation = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
    if deviation == 0:
        return [0.5] * len(scores)
    low = mean - 3 * deviation
    return [(s - low) / (6 * deviation) for s in scores]


def normalized_scores(scores: Sequence[float], method: FusionMethod) -> list[float]:
    """A ranking's scores mapped to [0, 1] (all 1 when they are all equal; DBSF: 0.5)."""
    if not scores:
        return []
    if method is FusionMethod.DBSF:
        return dbsf_normalized(scores)
    if method is FusionMethod.DISTRIBUTION:
        mean = sum(scores) / len(scores)
        deviation = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        low, high = mean - 3 * deviation, mean + 3 * deviation
    else:
        low, high = min(scores), max(scores)
    if high <= low:
        return [1.0] * len(scores)
    return [min(max((s - low) / (high - low), 0.0), 1.0) for s in scores]


def score_fusion(
    rankings: Sequence[Sequence[tuple[K, float]]], weights: Sequence[float], method: FusionMethod
) -> list[Fused[K]]:
    """Fuse rankings of (key, score), best first, by the weighted sum of normalised scores.

    Ties are broken by the best (lowest) rank in any ranking, then by first appearance.
    """
    if len(rankings) != len(weights):
        raise ValueError("one weight per ranking is needed")
    scores: dict[K, float] = {}
    ranks: dict[K, list[int]] = {}
    for which, (ranking, weight) in enumerate(zip(rankings, weights, strict=True)):
        normalized = normalized_scores([score for _, score in ranking], method)
        for position, ((key, _), value) in enumerate(
            zip(ranking, normalized, strict=True), start=1
        ):
            if key not in scores:
                scores[key] = 0.0
                ranks[key] = [0] * len(rankings)
            if ranks[key][which]:
                continue
            ranks[key][which] = position
            scores[key] += weight * value
    order = {key: index for index, key in enumerate(scores)}

    def best_rank(key: K) -> int:
        return min(rank for rank in ranks[key] if rank)

    keys = sorted(scores, key=lambda key: (-scores[key], best_rank(key), order[key]))
    return [Fused(key, scores[key], tuple(ranks[key])) for key in keys]


def fuse_passages(
    dense: Sequence[PassageHit], keyword: Sequence[PassageHit], params: FusionParams
) -> list[RankedHit]:
    """HYBRID: the two passage rankings fused by `params.method`."""
    passages = {hit.key: hit for hit in (*keyword, *dense)}
    weights = [params.dense_weight, params.keyword_weight]
    if params.method is FusionMethod.RRF:
        fused = reciprocal_rank_fusion(
            [[hit.key for hit in dense], [hit.key for hit in keyword]], weights, params.k
        )
    else:
        fused = score_fusion(
            [[(hit.key, hit.score) for hit in dense], [(hit.key, hit.score) for hit in keyword]],
            weights,
            params.method,
        )
    return [
        RankedHit(
            passages[item.key], item.score, dense_rank=item.ranks[0], keyword_rank=item.ranks[1]
        )
        for item in fused
    ]


def ranked_dense(hits: Sequence[PassageHit]) -> list[RankedHit]:
    return [RankedHit(hit, hit.score, dense_rank=rank) for rank, hit in enumerate(hits, start=1)]


def ranked_keyword(hits: Sequence[PassageHit]) -> list[RankedHit]:
    return [RankedHit(hit, hit.score, keyword_rank=rank) for rank, hit in enumerate(hits, start=1)]


def one_per_document(hits: Iterable[RankedHit], top_k: int) -> list[RankedHit]:
    """The first (best) passage of each document, at most `top_k` documents, order kept."""
    seen: set[str] = set()
    best: list[RankedHit] = []
    for hit in hits:
        if hit.passage.document_id in seen:
            continue
        seen.add(hit.passage.document_id)
        best.append(hit)
        if len(best) == top_k:
            break
    return best
