"""Keyword terms for Qdrant's sparse vectors."""

from __future__ import annotations

import pytest

from services.search.keywords import passage_terms, query_terms, term_id, tokenize


def test_tokenize_lowercases_drops_stop_words_and_stems_plurals() -> None:
    assert tokenize("The Cells of mice, and studies!") == ["cell", "mice", "study"]
    assert tokenize("glass virus analysis") == ["glass", "virus", "analysis"]


def test_term_ids_are_stable_32_bit() -> None:
    assert term_id("cell") == term_id("cell")
    assert term_id("cell") != term_id("cells")
    assert 0 <= term_id("anything") < 2**32


def test_passage_weights_follow_bm25_term_frequency() -> None:
    terms = passage_terms("cell cell protein", k1=1.2, b=0.75, avg_length=3)
    weights = dict(zip(terms.indices, terms.values, strict=True))
    norm = 1.2 * (1 - 0.75 + 0.75 * 3 / 3)
    assert weights[term_id("cell")] == pytest.approx(2 * 2.2 / (2 + norm))
    assert weights[term_id("protein")] == pytest.approx(1 * 2.2 / (1 + norm))
    assert terms.indices == sorted(terms.indices)


def test_query_terms_are_distinct_with_weight_one() -> None:
    terms = query_terms("cells cell the")
    assert terms.indices == [term_id("cell")]
    assert terms.values == [1.0]
    assert query_terms("the of and").indices == []
