"""Retrieval metrics with binary relevance, as BEIR reports them.

nDCG@k = DCG@k / IDCG@k with DCG@k = sum over ranks i <= k of rel_i / log2(i + 1) and
IDCG@k the DCG of an ideal ranking (all relevant documents first). Recall@k = relevant
documents among the first k / all relevant documents. A query with no relevant document
is skipped by the callers (it has no defined score).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence


def ndcg_at_k(ranking: Sequence[str], relevant: Collection[str], k: int) -> float:
    if not relevant:
        raise ValueError("nDCG is undefined for a query with no relevant documents")
    dcg = sum(
        1.0 / math.log2(position + 1)
        for position, document in enumerate(_unique(ranking)[:k], start=1)
        if document in relevant
    )
    ideal = sum(1.0 / math.log2(position + 1) for position in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def recall_at_k(ranking: Sequence[str], relevant: Collection[str], k: int) -> float:
    if not relevant:
        raise ValueError("recall is undefined for a query with no relevant documents")
    found = sum(1 for document in _unique(ranking)[:k] if document in relevant)
    return found / len(relevant)


def mean_over_queries(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Collection[str]],
    metric: str,
    k: int,
) -> float:
    """The metric averaged over the queries of `qrels` that have a relevant document; a query
    missing from `rankings` counts as an empty ranking."""
    function = {"ndcg": ndcg_at_k, "recall": recall_at_k}[metric]
    scores = [
        function(rankings.get(query, ()), relevant, k)
        for query, relevant in qrels.items()
        if relevant
    ]
    return sum(scores) / len(scores) if scores else 0.0


def _unique(ranking: Sequence[str]) -> list[str]:
    """A document ranked twice counts once, at its first position."""
    return list(dict.fromkeys(ranking))
