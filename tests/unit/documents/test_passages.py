"""Structure-aware passages: within the token budget (counted by the model's tokenizer),
boundaries on sections, paragraphs, sentences, then words."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from ragmeshd.documents import (
    ExtractedDocument,
    PassageBudget,
    Section,
    extract_file,
    split_document,
)
from ragmeshd.documents.passages import sentences
from tests.unit.documents.conftest import write_pdf

Count = Callable[[str], int]
WORDS = "glacier rope crevasse probe beacon shovel avalanche snow bridge anchor".split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def paragraph(rng: random.Random, count: int) -> str:
    return " ".join(sentence(rng, rng.randint(4, 14)) for _ in range(count))


def document(*sections: Section, title: str = "Doc") -> ExtractedDocument:
    return ExtractedDocument(title, "md", sections)


def test_a_short_section_is_one_passage_with_its_metadata(count_tokens: Count) -> None:
    doc = document(
        Section((), "Preface."),
        Section(("Install", "Linux"), "Run make.\n\nThen up.", page=None),
        title="Guide",
    )
    passages = split_document(doc, count_tokens, PassageBudget(254, 32, 8000))
    assert [(p.index, p.text, p.title, p.section, p.page) for p in passages] == [
        (0, "Preface.", "Guide", "", None),
        (1, "Run make.\n\nThen up.", "Guide", "Install > Linux", None),
    ]
    assert passages[1].token_count == count_tokens("Run make. Then up.")


@pytest.mark.parametrize("seed", range(5))
def test_passages_fit_the_budget_and_cover_every_sentence_in_order(
    count_tokens: Count, seed: int
) -> None:
    rng = random.Random(seed)
    text = "\n\n".join(paragraph(rng, rng.randint(1, 12)) for _ in range(15))
    budget = PassageBudget(max_tokens=60, overlap_tokens=12, max_chars=400)
    passages = split_document(document(Section(("A",), text)), count_tokens, budget)
    assert len(passages) > 5
    for passage in passages:
        assert count_tokens(passage.text) == passage.token_count <= budget.max_tokens
        assert len(passage.text) <= budget.max_chars
        assert passage.section == "A"
    # every sentence is whole in some passage, and passages follow the text's order
    position = 0
    for block in text.split("\n\n"):
        for expected in sentences(block):
            holder = next(i for i, p in enumerate(passages) if expected in p.text)
            assert holder >= position
            position = holder


def test_paragraph_boundaries_are_kept_and_never_overlapped(count_tokens: Count) -> None:
    rng = random.Random(7)
    paragraphs = [paragraph(rng, 2) for _ in range(6)]
    budget = PassageBudget(max_tokens=50, overlap_tokens=20, max_chars=8000)
    passages = split_document(document(Section((), "\n\n".join(paragraphs))), count_tokens, budget)
    joined = [p.text.split("\n\n") for p in passages]
    pieces = [piece for group in joined for piece in group]
    # whole paragraphs, each once, in order (each fits the budget on its own)
    assert all(count_tokens(p) <= 50 for p in paragraphs)
    assert pieces == paragraphs


def test_a_long_paragraph_is_cut_between_sentences_with_overlap(count_tokens: Count) -> None:
    rng = random.Random(3)
    text = paragraph(rng, 30)
    budget = PassageBudget(max_tokens=60, overlap_tokens=20, max_chars=8000)
    passages = split_document(document(Section((), text)), count_tokens, budget)
    assert len(passages) >= 4
    for first, second in itertools.pairwise(passages):
        assert first.text.endswith(".")
        head = sentences(second.text)[0]
        assert head in first.text  # the next passage starts with the last sentence(s)
    assert passages[-1].text.endswith(text[-20:])


def test_a_sentence_longer_than_the_budget_is_cut_between_words(count_tokens: Count) -> None:
    text = " ".join(f"word{n}" for n in range(400)) + " " + "x" * 3000
    budget = PassageBudget(max_tokens=40, overlap_tokens=0, max_chars=500)
    passages = split_document(document(Section((), text)), count_tokens, budget)
    words = " ".join(p.text for p in passages).split()
    assert words[:400] == [f"word{n}" for n in range(400)]
    assert "".join(words[400:]) == "x" * 3000
    for passage in passages:
        assert count_tokens(passage.text) <= 40 and len(passage.text) <= 500


def test_code_is_cut_between_lines_and_keeps_them(count_tokens: Count) -> None:
    code = "\n".join(f"value_{n} = compute({n}, scale=2)" for n in range(60))
    budget = PassageBudget(max_tokens=50, overlap_tokens=0, max_chars=8000)
    passages = split_document(document(Section((), code)), count_tokens, budget)
    assert len(passages) > 1
    assert "\n".join(p.text for p in passages) == code


def test_pdf_passages_carry_their_page_and_never_span_pages(
    tmp_path: Path, count_tokens: Count
) -> None:
    rng = random.Random(11)
    pages = [paragraph(rng, 12) for _ in range(3)]
    path = write_pdf(tmp_path / "manual.pdf", pages, headings=["Intro", "", "Gear"])
    extracted = extract_file(path)
    assert isinstance(extracted, ExtractedDocument)
    passages = split_document(extracted, count_tokens, PassageBudget(60, 10, 8000))
    assert {p.page for p in passages} == {1, 2, 3}
    assert [p.section for p in passages if p.page == 2] == ["Intro"] * sum(
        1 for p in passages if p.page == 2
    )
    assert {p.section for p in passages if p.page == 3} == {"Gear"}
    for number, page_text in enumerate(pages, start=1):
        text = " ".join(p.text for p in passages if p.page == number)
        for expected in sentences(page_text):
            assert re.sub(r"\s+", " ", expected) in text


def test_budget_rejects_an_overlap_of_half_the_window() -> None:
    with pytest.raises(ValueError, match="overlap"):
        PassageBudget(max_tokens=64, overlap_tokens=32, max_chars=100)
