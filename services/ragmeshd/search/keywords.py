"""One BM25 for both backends: how text becomes terms, and the BM25 formulas.

A term is a lower-cased run of letters and digits that is not an English stop word (the
Snowball English stop list, the one PostgreSQL's `english` configuration uses), reduced by the
Snowball English stemmer (PyStemmer, the C libstemmer). The pgvector backend stores exactly
these terms (it does not use PostgreSQL's parser), and the Qdrant backend's sparse vectors
are built from them, so the two backends rank keywords the same way.

BM25 (Robertson & Zaragoza) with a passage's length counted in terms (stop words excluded):
  score(q, p) = sum over distinct query terms t in p of
                idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_length))
  idf(t) = ln((N - df + 0.5) / (df + 0.5) + 1)      (never negative; Qdrant's IDF modifier)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import Stemmer

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# The Snowball English stop list (PostgreSQL's tsearch_data/english.stop).
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
    she her hers herself it its itself they them their theirs themselves what which who whom this
    that these those am is are was were be been being have has had having do does did doing a an
    the and but if or because as until while of at by for with about against between into through
    during before after above below to from up down in out on off over under again further then
    once here there when where why how all any both each few more most other some such no nor not
    only own same so than too very s t can will just don should now""".split()
)

_STEMMER = Stemmer.Stemmer("english")


@lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    return str(_STEMMER.stemWord(word))


def tokenize(text: str) -> list[str]:
    """The text's terms in order: words of letters and digits, lower-cased, stop words
    dropped, Snowball-stemmed."""
    return [_stem(word) for word in _WORD.findall(text.lower()) if word not in STOP_WORDS]


@dataclass(frozen=True)
class PassageTerms:
    """A passage's distinct terms with their frequencies, and its length in terms."""

    frequencies: dict[str, int]
    length: int


def passage_terms(text: str) -> PassageTerms:
    words = tokenize(text)
    return PassageTerms(dict(Counter(words)), len(words))


def query_terms(text: str) -> list[str]:
    """A query's distinct terms, in first-appearance order (each counts once, weight 1)."""
    return list(dict.fromkeys(tokenize(text)))


def bm25_idf(document_frequency: int, passages: int) -> float:
    """BM25's inverse document frequency (never negative), as Qdrant's IDF modifier uses."""
    return math.log((passages - document_frequency + 0.5) / (document_frequency + 0.5) + 1)


def bm25_tf(frequency: int, length: int, *, k1: float, b: float, avg_length: float) -> float:
    """BM25's saturated, length-normalised term frequency."""
    return frequency * (k1 + 1) / (frequency + k1 * (1 - b + b * length / avg_length))


# Upper bounds and the scores they bound are computed in different places (Python, numpy,
# SQL): a margin against rounding, so pruning never drops a passage that belongs.
BM25_BOUND_MARGIN = 1 + 1e-9


def bm25_term_bound(
    idf: float, max_frequency: int, min_length: int, *, k1: float, b: float, avg_length: float
) -> float:
    """The most one term can add to a passage's score: its weight at its highest frequency in
    the shortest passage it occurs in (MaxScore pruning; deletions keep it an upper bound)."""
    tf = bm25_tf(max_frequency, min_length, k1=k1, b=b, avg_length=avg_length)
    return idf * tf * BM25_BOUND_MARGIN


def term_id(term: str) -> int:
    """A stable 32-bit id for a term (Qdrant's sparse indices are unsigned 32-bit)."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big")


@dataclass(frozen=True)
class SparseTerms:
    """A sparse vector: term ids and their weights, ids unique and ascending."""

    indices: list[int]
    values: list[float]


def sparse_passage(terms: PassageTerms, *, k1: float, b: float, avg_length: float) -> SparseTerms:
    """A passage's BM25 term-frequency weights as a sparse vector (Qdrant multiplies each by
    the term's IDF at query time)."""
    weights: dict[int, float] = {}
    for term, frequency in terms.frequencies.items():
        # Two terms hashing to one id (rare) add up, as if one term.
        index = term_id(term)
        weights[index] = weights.get(index, 0.0) + bm25_tf(
            frequency, terms.length, k1=k1, b=b, avg_length=avg_length
        )
    ordered = sorted(weights)
    return SparseTerms(ordered, [weights[index] for index in ordered])


def sparse_query(text: str) -> SparseTerms:
    """A query's terms, each weighted 1 (IDF is applied by Qdrant)."""
    ordered = sorted({term_id(term) for term in query_terms(text)})
    return SparseTerms(ordered, [1.0] * len(ordered))
