"""Structure-aware passages: a document's sections cut into passages within the embedding
model's token budget, with boundaries on paragraphs, then sentences, then words.

A passage never spans two sections (so it has one heading path and, in a PDF, one page).
Within a section whole paragraphs are packed while they fit; a paragraph longer than the
budget is cut between sentences (lines, for code) and consecutive pieces of it share up to
`overlap_tokens` tokens of whole sentences, so a sentence cut from its context is still
next to it in one passage; a sentence longer than the budget is cut between words.

Token counts come from the caller (the embedding model's tokenizer: the search server's
`PassageSplitter.count_tokens`, or the same tokenizer loaded by the CLI), because this package
sits below the services. Counts of paragraphs and sentences are added up rather than counted
again when joined, which holds for the WordPiece tokenizer (whitespace is never a token); the
search server's own splitter still cuts anything that came out longer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ragmeshd.documents.model import SECTION_SEPARATOR, ExtractedDocument, Passage, Section

CountTokens = Callable[[str], int]

_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])[\"'\u201d\u2019)\]]*\s+(?=\S)")


@dataclass(frozen=True)
class PassageBudget:
    """The limits of one passage (the search settings' passage_max_tokens, ...)."""

    max_tokens: int
    overlap_tokens: int
    max_chars: int

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.max_chars < 1:
            raise ValueError("max_tokens and max_chars must be positive")
        if not 0 <= self.overlap_tokens < max(1, self.max_tokens // 2):
            raise ValueError("overlap_tokens must be less than half of max_tokens")


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    paragraph: int
    joiner: str  # between it and the previous unit of the same paragraph


def sentences(paragraph: str) -> list[str]:
    """The sentences of a paragraph; the lines of one that has line breaks (code)."""
    if "\n" in paragraph:
        return [line for line in paragraph.split("\n") if line.strip()]
    return [part for part in _SENTENCE_END.split(paragraph) if part]


def split_document(
    document: ExtractedDocument, count_tokens: CountTokens, budget: PassageBudget
) -> list[Passage]:
    """The passages of a document, in order, numbered from 0."""
    passages: list[Passage] = []
    for section in document.sections:
        for text, tokens in _split_section(section, count_tokens, budget):
            passages.append(
                Passage(
                    index=len(passages),
                    text=text,
                    title=document.title,
                    section=SECTION_SEPARATOR.join(section.headings),
                    page=section.page,
                    token_count=tokens,
                )
            )
    return passages


def _fits(tokens: int, chars: int, budget: PassageBudget) -> bool:
    return tokens <= budget.max_tokens and chars <= budget.max_chars


def _units(section: Section, count: CountTokens, budget: PassageBudget) -> Iterator[_Unit]:
    for number, paragraph in enumerate(section.text.split("\n\n")):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        tokens = count(paragraph)
        if _fits(tokens, len(paragraph), budget):
            yield _Unit(paragraph, tokens, number, " ")
            continue
        joiner = "\n" if "\n" in paragraph else " "
        for sentence in sentences(paragraph):
            tokens = count(sentence)
            if _fits(tokens, len(sentence), budget):
                yield _Unit(sentence, tokens, number, joiner)
            else:
                for piece, piece_tokens in _cut_words(sentence, count, budget):
                    yield _Unit(piece, piece_tokens, number, " ")


def _cut_words(text: str, count: CountTokens, budget: PassageBudget) -> Iterator[tuple[str, int]]:
    """Pieces of a too-long sentence, each the longest run of words that fits (found by
    bisection); a single word longer than the budget is cut by characters."""
    words = text.split()
    start = 0
    while start < len(words):

        def measure(end: int, start: int = start) -> tuple[bool, int]:
            piece = " ".join(words[start:end])
            tokens = count(piece)
            return _fits(tokens, len(piece), budget), tokens

        low, high = start + 1, len(words)
        fits, tokens = measure(high)
        if fits:
            end = high
        else:
            while low < high:
                middle = (low + high + 1) // 2
                if measure(middle)[0]:
                    low = middle
                else:
                    high = middle - 1
            end = low
            fits, tokens = measure(end)
        if not fits:  # one word over the budget
            word = words[start]
            step = max(1, min(budget.max_chars, len(word) * budget.max_tokens // max(tokens, 1)))
            for offset in range(0, len(word), step):
                chunk = word[offset : offset + step]
                yield chunk, count(chunk)
        else:
            yield " ".join(words[start:end]), tokens
        start = end


def _split_section(
    section: Section, count: CountTokens, budget: PassageBudget
) -> Iterator[tuple[str, int]]:
    current: list[_Unit] = []

    def size(units: list[_Unit]) -> tuple[int, int]:
        tokens = sum(unit.tokens for unit in units)
        return tokens, len(_join(units))

    for unit in _units(section, count, budget):
        if current:
            tokens, chars = size([*current, unit])
            if not _fits(tokens, chars, budget):
                yield _join(current), sum(u.tokens for u in current)
                carry: list[_Unit] = []
                if budget.overlap_tokens and current[-1].paragraph == unit.paragraph:
                    carried = 0
                    for previous in reversed(current):
                        if (
                            previous.paragraph != unit.paragraph
                            or carried + previous.tokens > budget.overlap_tokens
                        ):
                            break
                        carry.insert(0, previous)
                        carried += previous.tokens
                while carry and not _fits(*size([*carry, unit]), budget):
                    carry.pop(0)
                current = carry
        current.append(unit)
    if current:
        yield _join(current), sum(u.tokens for u in current)


def _join(units: list[_Unit]) -> str:
    parts: list[str] = []
    for position, unit in enumerate(units):
        if position:
            same = units[position - 1].paragraph == unit.paragraph
            parts.append(unit.joiner if same else "\n\n")
        parts.append(unit.text)
    return "".join(parts)
