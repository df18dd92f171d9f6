"""The in-memory BM25 index against a brute-force BM25 over the same passages: the same
passages in the same order with the same scores, before and after replacements, deletions
and additions, for rare, common and mixed queries (MaxScore pruning changes nothing)."""

from __future__ import annotations

import numpy as np
import pytest

from ragmeshd.search.bm25_index import Bm25Index, PassageBatch
from ragmeshd.search.keywords import bm25_idf, bm25_tf

K1, B = 1.2, 0.75


def random_passages(
    rng: np.random.Generator, documents: list[str], vocabulary: int
) -> dict[tuple[str, int], dict[int, int]]:
    weights = 1.0 / np.arange(1, vocabulary + 1)
    passages = {}
    for document in documents:
        for index in range(int(rng.integers(1, 3))):
            words = rng.choice(vocabulary, size=int(rng.integers(2, 30)), p=weights / weights.sum())
            counts: dict[int, int] = {}
            for word in words.tolist():
                counts[word] = counts.get(word, 0) + 1
            passages[(document, index)] = counts
    return passages


def batch_of(passages: dict[tuple[str, int], dict[int, int]]) -> PassageBatch:
    keys = list(passages)
    return PassageBatch.from_rows(
        keys,
        [sum(passages[k].values()) for k in keys],
        [sorted(passages[k]) for k in keys],
        [[passages[k][t] for t in sorted(passages[k])] for k in keys],
    )


def brute_force(
    passages: dict[tuple[str, int], dict[int, int]], terms: list[int], limit: int
) -> list[tuple[tuple[str, int], float]]:
    lengths = {k: sum(c.values()) for k, c in passages.items()}
    average = max(sum(lengths.values()) / len(passages), 1.0)
    idf = {t: bm25_idf(sum(t in c for c in passages.values()), len(passages)) for t in terms}
    scored = []
    for key, counts in passages.items():
        if any(t in counts for t in terms):
            score = sum(
                idf[t] * bm25_tf(counts[t], lengths[key], k1=K1, b=B, avg_length=average)
                for t in dict.fromkeys(terms)
                if t in counts
            )
            scored.append((key, score))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored[:limit]


def assert_same(index: Bm25Index, passages: dict, queries: list[list[int]]) -> None:
    for terms in queries:
        for limit in (1, 10, 100):
            found = index.search(terms, limit)
            expected = brute_force(passages, terms, limit)
            assert [key for key, _ in found] == [key for key, _ in expected], terms
            assert [s for _, s in found] == pytest.approx([s for _, s in expected], rel=1e-12)


def test_index_is_exact_bm25_through_changes() -> None:
    rng = np.random.default_rng(3)
    vocabulary = 400
    documents = [f"d{i:04d}" for i in range(1500)]
    passages = random_passages(rng, documents, vocabulary)
    index = Bm25Index(1, batch_of(passages), k1=K1, b=B)
    queries = [
        rng.integers(0, vocabulary, size=int(rng.integers(1, 8))).tolist() for _ in range(25)
    ]
    queries += [[0], [0, 1, 2], [399, 0, 1], [5000], [0, 0, 7]]
    assert_same(index, passages, queries)

    # Replace some documents (new text, possibly new term ids), delete others, add new ones.
    for version, round_seed in enumerate((11, 12, 13), start=2):
        round_rng = np.random.default_rng(round_seed)
        replaced = [documents[int(i)] for i in round_rng.integers(0, len(documents), size=40)]
        deleted = [documents[int(i)] for i in round_rng.integers(0, len(documents), size=30)]
        added = [f"n{version}-{i}" for i in range(50)]
        for key in [k for k in passages if k[0] in set(replaced) | set(deleted)]:
            del passages[key]
        fresh = random_passages(round_rng, sorted(set(replaced) - set(deleted)) + added, 600)
        passages.update(fresh)
        index.apply(version, set(replaced) | set(deleted), batch_of(fresh))
        assert index.version == version
        assert index.passages == len(passages)
        assert_same(index, passages, [*queries, [550, 0], [599]])


def test_equal_scores_tie_by_document_then_passage() -> None:
    same = {0: 2, 1: 1}
    passages = {("b", 0): dict(same), ("a", 1): dict(same), ("a", 0): dict(same), ("c", 0): {2: 3}}
    index = Bm25Index(1, batch_of(passages), k1=K1, b=B)
    assert [key for key, _ in index.search([0, 1], 10)] == [("a", 0), ("a", 1), ("b", 0)]
