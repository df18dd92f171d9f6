"""Choosing a query's context: merge the passages every collection returned, drop
duplicates, keep the best `top_k` and cut them to a token budget.

Tokens are counted with the embedding model's own tokenizer (no special tokens), the same
count the search service splits documents by. Passages are taken best first; the first one
that does not fit the remaining budget is cut to fit when at least `min_partial_tokens` are
left, and the context ends there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

_SPACE = re.compile(r"\s+")


class TokenCounter(Protocol):
    def count(self, text: str) -> int:
        """Tokens of `text`, without special tokens."""
        ...

    def head(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` that is at most `max_tokens` tokens long."""
        ...


class HuggingFaceTokenCounter:
    """A TokenCounter over a transformers fast tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> HuggingFaceTokenCounter:
        from transformers import AutoTokenizer

        # A local directory, local_files_only: nothing is downloaded, so there is no
        # revision to pin.
        tokenizer = AutoTokenizer.from_pretrained(  # nosec B615
            str(model_dir), local_files_only=True
        )
        return cls(tokenizer)

    def count(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def head(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        encoding = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        offsets = encoding["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text
        return text[: offsets[max_tokens - 1][1]].rstrip()


@dataclass(frozen=True)
class Passage:
    """One retrieved passage."""

    collection: str
    document_id: str
    text: str
    passage_index: int
    score: float
    token_count: int = 0
    truncated: bool = False
    # The document's metadata (e.g. source, title, section, page from an ingest), as
    # (key, value) pairs: what the answer's sources show.
    metadata: tuple[tuple[str, str | float | bool], ...] = ()


@dataclass(frozen=True)
class ContextSelection:
    """The chosen passages, best first, and what was left out."""

    passages: list[Passage]
    token_count: int
    duplicate_count: int
    dropped_count: int


def _text_key(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def deduplicate(passages: Iterable[Passage]) -> tuple[list[Passage], int]:
    """Passages best first, keeping one per document and one per text (whitespace and case
    ignored); returns them and how many were dropped."""
    ordered = sorted(passages, key=lambda passage: passage.score, reverse=True)
    seen_documents: set[tuple[str, str]] = set()
    seen_texts: set[str] = set()
    kept: list[Passage] = []
    for passage in ordered:
        document = (passage.collection, passage.document_id)
        text = _text_key(passage.text)
        if document in seen_documents or text in seen_texts or not text:
            continue
        seen_documents.add(document)
        seen_texts.add(text)
        kept.append(passage)
    return kept, len(ordered) - len(kept)


def select_context(
    passages: Iterable[Passage],
    counter: TokenCounter,
    *,
    top_k: int,
    max_tokens: int,
    min_partial_tokens: int,
) -> ContextSelection:
    """The best distinct passages that fit `top_k` and `max_tokens`."""
    unique, duplicates = deduplicate(passages)
    chosen: list[Passage] = []
    used = 0
    for passage in unique[:top_k]:
        tokens = counter.count(passage.text)
        left = max_tokens - used
        if tokens <= left:
            chosen.append(replace(passage, token_count=tokens))
            used += tokens
            continue
        if left >= min_partial_tokens:
            text = counter.head(passage.text, left)
            tokens = counter.count(text)
            if text and tokens <= left:
                chosen.append(replace(passage, text=text, token_count=tokens, truncated=True))
                used += tokens
        break
    return ContextSelection(chosen, used, duplicates, len(unique) - len(chosen))
