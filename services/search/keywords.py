"""Keyword terms for the Qdrant backend's sparse vectors.

Qdrant scores a sparse query against sparse passage vectors by dot product; with the
collection's IDF modifier it multiplies each term by its inverse document frequency. The
service supplies the rest of BM25: a passage's weight for a term is its saturated, length
normalised term frequency tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_length)), and a
query's weight for each distinct term is 1. Term ids are a stable hash of the term, so no
vocabulary has to be stored or shared.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# English function words that carry no topic (a subset of PostgreSQL's english stop list).
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with you your yours yourself yourselves""".split()
)


@dataclass(frozen=True)
class SparseTerms:
    """A sparse vector: term ids and their weights, ids unique and ascending."""

    indices: list[int]
    values: list[float]


def tokenize(text: str) -> list[str]:
    """Lower-cased words of letters and digits, stop words removed, with a light English
    plural stemming (so "cells" matches "cell")."""
    return [_stem(word) for word in _WORD.findall(text.lower()) if word not in STOP_WORDS]


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def term_id(term: str) -> int:
    """A stable 32-bit id for a term (Qdrant's sparse indices are unsigned 32-bit)."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big")


def passage_terms(text: str, *, k1: float, b: float, avg_length: float) -> SparseTerms:
    """A passage's BM25 term-frequency weights."""
    words = tokenize(text)
    return _sparse(Counter(words), len(words), k1=k1, b=b, avg_length=avg_length)


def query_terms(text: str) -> SparseTerms:
    """A query's terms, each weighted 1 (IDF is applied by Qdrant)."""
    weights: dict[int, float] = {}
    for term in tokenize(text):
        weights[term_id(term)] = 1.0
    ordered = sorted(weights)
    return SparseTerms(ordered, [weights[index] for index in ordered])


def _sparse(
    counts: Counter[str], length: int, *, k1: float, b: float, avg_length: float
) -> SparseTerms:
    norm = k1 * (1 - b + b * length / avg_length)
    weights: dict[int, float] = {}
    for term, frequency in counts.items():
        # Two terms hashing to one id (rare) add up, as if one term.
        index = term_id(term)
        weights[index] = weights.get(index, 0.0) + frequency * (k1 + 1) / (frequency + norm)
    ordered = sorted(weights)
    return SparseTerms(ordered, [weights[index] for index in ordered])
