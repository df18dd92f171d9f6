"""The in-memory BM25 index with a key's groups (issue 24): the same passages, order and
scores as the SQL path's ranking with its group condition, that is BM25 with the whole
collection's statistics over the passages the key may see, top k taken after the condition
(so it stays full). Checked against a brute-force BM25 through replacements and additions."""

from __future__ import annotations

import numpy as np
import pytest

from ragmeshd.search.bm25_index import Bm25Index, PassageBatch, held_none_of
from tests.unit.search.test_bm25_index import K1, B, brute_force, random_passages

ACLS = ("", "", "", "finance", "finance,board", "legal")
KEYS_GROUPS: list[tuple[str, ...] | None] = [None, (), ("finance",), ("board", "legal")]


def batch_with_acls(passages: dict, acl_of: dict[str, str]) -> PassageBatch:
    keys = list(passages)
    return PassageBatch.from_rows(
        keys,
        [sum(passages[k].values()) for k in keys],
        [sorted(passages[k]) for k in keys],
        [[passages[k][t] for t in sorted(passages[k])] for k in keys],
        [acl_of[k[0]] for k in keys],
    )


def visible_oracle(
    passages: dict, acl_of: dict[str, str], terms: list[int], limit: int, groups
) -> list:
    ranked = brute_force(passages, terms, len(passages))
    if groups is not None:
        ranked = [
            (key, score)
            for key, score in ranked
            if not acl_of[key[0]] or not held_none_of(acl_of[key[0]], groups)
        ]
    return ranked[:limit]


def assert_same(index: Bm25Index, passages: dict, acl_of: dict, queries: list) -> None:
    for groups in KEYS_GROUPS:
        for terms in queries:
            for limit in (1, 10, 100):
                found = index.search(terms, limit, groups)
                expected = visible_oracle(passages, acl_of, terms, limit, groups)
                assert [k for k, _ in found] == [k for k, _ in expected], (groups, terms)
                assert [s for _, s in found] == pytest.approx([s for _, s in expected], rel=1e-12)


def test_groups_filter_before_top_k_with_the_collections_statistics() -> None:
    rng = np.random.default_rng(24)
    vocabulary = 300
    documents = [f"d{i:04d}" for i in range(1200)]
    acl_of = {d: ACLS[int(rng.integers(0, len(ACLS)))] for d in documents}
    passages = random_passages(rng, documents, vocabulary)
    index = Bm25Index(1, batch_with_acls(passages, acl_of), k1=K1, b=B)
    queries = [
        rng.integers(0, vocabulary, size=int(rng.integers(1, 6))).tolist() for _ in range(15)
    ]
    queries += [[0], [0, 1, 2], [299, 0]]
    assert_same(index, passages, acl_of, queries)
    # A key outside every group still gets a full top k when enough open passages match.
    assert len(index.search([0], 100, ())) == 100

    for version, seed in enumerate((31, 32), start=2):
        round_rng = np.random.default_rng(seed)
        replaced = [documents[int(i)] for i in round_rng.integers(0, len(documents), size=40)]
        added = [f"n{version}-{i}" for i in range(40)]
        for document in [*replaced, *added]:  # a replacement may change the acl too
            acl_of[document] = ACLS[int(round_rng.integers(0, len(ACLS)))]
        for key in [k for k in passages if k[0] in set(replaced)]:
            del passages[key]
        fresh = random_passages(round_rng, sorted(set(replaced)) + added, 400)
        passages.update(fresh)
        index.apply(version, set(replaced), batch_with_acls(fresh, acl_of))
        assert_same(index, passages, acl_of, [*queries, [350, 0]])
