"""Passages sized by the model's own tokenizer, on word boundaries, with overlap."""

from __future__ import annotations

import itertools
import random

import pytest

from ragmeshd.models import packaged_model_path
from ragmeshd.search.chunking import PassageSplitter, load_tokenizer

WINDOW = 256  # all-MiniLM-L6-v2's max_seq_length, [CLS] and [SEP] included


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return load_tokenizer(packaged_model_path())


@pytest.fixture(scope="module")
def splitter(tokenizer) -> PassageSplitter:  # type: ignore[no-untyped-def]
    return PassageSplitter(tokenizer, max_tokens=254, overlap_tokens=32, max_chars=8000)


def long_text(words: int, seed: int = 3) -> str:
    rng = random.Random(seed)
    vocabulary = "mitochondrial phosphorylation cells protein immunohistochemistry of the a".split()
    return " ".join(rng.choice(vocabulary) for _ in range(words))


def test_a_short_text_is_one_passage(splitter: PassageSplitter) -> None:
    assert splitter.split("  A short abstract about cells.  ") == ["A short abstract about cells."]


def test_long_text_passages_fit_the_model_window(splitter: PassageSplitter, tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = long_text(2000)
    passages = splitter.split(text)
    assert len(passages) > 3
    for passage in passages:
        # With [CLS] and [SEP], exactly what the embedding model sees.
        assert len(tokenizer.encode(passage, add_special_tokens=True).ids) <= WINDOW
        assert passage in text  # a verbatim slice
        assert text.startswith(passage) or text[text.index(passage) - 1] == " "  # word start
    assert text.startswith(passages[0]) and text.endswith(passages[-1])


def test_consecutive_passages_overlap_by_about_the_overlap(splitter: PassageSplitter) -> None:
    text = long_text(1500, seed=5)
    passages = splitter.split(text)
    for first, second in itertools.pairwise(passages):
        shared = 0
        for size in range(min(len(first), len(second)), 0, -1):
            if first.endswith(second[:size]):
                shared = size
                break
        overlap_tokens = splitter.count_tokens(second[:shared])
        assert 20 <= overlap_tokens <= 40


def test_every_word_is_in_some_passage(splitter: PassageSplitter) -> None:
    text = " ".join(f"word{i}" for i in range(1200))
    covered = set(" ".join(splitter.split(text)).split())
    assert covered == set(text.split())


def test_one_word_longer_than_the_window_is_cut_inside(tokenizer) -> None:  # type: ignore[no-untyped-def]
    splitter = PassageSplitter(tokenizer, max_tokens=16, overlap_tokens=4, max_chars=8000)
    text = "x" + "ab" * 40  # one "word" of many word pieces
    passages = splitter.split(text)
    assert len(passages) > 1
    assert all(splitter.count_tokens(p) <= 16 for p in passages)


def test_passages_are_capped_in_characters(tokenizer) -> None:  # type: ignore[no-untyped-def]
    splitter = PassageSplitter(tokenizer, max_tokens=254, overlap_tokens=32, max_chars=100)
    # Very long "words" are single [UNK] tokens: few tokens, many characters.
    text = " ".join(["y" * 150] * 3)
    passages = splitter.split(text)
    assert passages and all(len(p) <= 100 for p in passages)


def test_overlap_must_be_under_half_the_window(tokenizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        PassageSplitter(tokenizer, max_tokens=10, overlap_tokens=5, max_chars=100)
