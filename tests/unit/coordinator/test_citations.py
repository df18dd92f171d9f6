"""CitationFilter against a one-shot oracle: however an answer is cut into chunks, the text
that streams out is the whole answer with its out-of-range [n] markers removed."""

from __future__ import annotations

import itertools
import random
import re

from ragmeshd.coordinator.citations import CitationFilter


def _stream(chunks: list[str], sources: int) -> tuple[str, list[int], int]:
    citations = CitationFilter(sources)
    text = "".join(citations.feed(chunk) for chunk in chunks) + citations.finish()
    return text, citations.cited, citations.removed


def _oracle(text: str, sources: int) -> str:
    return re.sub(
        r"\[(\d{1,3})\]", lambda m: m.group(0) if 1 <= int(m.group(1)) <= sources else "", text
    )


def test_valid_citations_stay_and_are_collected() -> None:
    assert _stream(["Paris [2] is the capital [1][2]."], 2) == (
        "Paris [2] is the capital [1][2].",
        [2, 1],
        0,
    )


def test_citations_of_missing_sources_are_removed() -> None:
    assert _stream(["Paris [7] or [0]", " here [1]"], 3) == ("Paris  or  here [1]", [1], 2)


def test_a_marker_split_over_chunks() -> None:
    assert _stream(["Paris [", "1", "2] and [", "1]"], 3) == ("Paris  and [1]", [1], 1)


def test_brackets_that_are_not_markers_pass() -> None:
    assert _stream(["a [b] [12345] [", "x"], 3)[0] == "a [b] [12345] [x"


def test_random_chunkings_match_the_oracle() -> None:
    rng = random.Random(5)
    pieces = ["[", "]", "1", "2", "9", "a", " ", "[3]", "[10]"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        sources = rng.randint(0, 4)
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 5))))
        chunks = [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]
        assert _stream(chunks, sources)[0] == _oracle(text, sources), (text, chunks, sources)
