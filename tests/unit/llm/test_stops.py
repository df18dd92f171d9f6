"""split_at_stop against a brute-force oracle: fed a piece at a time, however the text is
cut, the text it lets out is exactly the text before the first stop sequence completed, and
it never lets out text that could still turn out to be the start of a stop sequence."""

from __future__ import annotations

import itertools
import random

from ragmeshd.llm.stops import split_at_stop


def _stream(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    sent, pending = "", ""
    for piece in pieces:
        pending += piece
        send, pending, stopped = split_at_stop(pending, stops)
        sent += send
        if stopped:
            return sent, True
    return sent + pending, False


def _oracle(text: str, stops: list[str]) -> tuple[str, bool]:
    """Read the text a character at a time; stop at the first stop sequence completed (the
    longest of those completed at the same character)."""
    for end in range(len(text) + 1):
        done = [s for s in stops if s and text[:end].endswith(s)]
        if done:
            return text[: end - max(len(s) for s in done)], True
    return text, False


def test_no_stop_sequences_sends_everything() -> None:
    assert split_at_stop("hello", []) == ("hello", "", False)


def test_a_stop_split_over_pieces_is_held_back_then_cut() -> None:
    assert split_at_stop("answer [", ["[END]"]) == ("answer ", "[", False)
    assert split_at_stop("[EN", ["[END]"]) == ("", "[EN", False)
    assert split_at_stop("[END] more", ["[END]"]) == ("", "", True)


def test_a_false_start_is_released() -> None:
    assert split_at_stop("[ENx", ["[END]"]) == ("[ENx", "", False)


def test_the_first_stop_completed_wins() -> None:
    assert split_at_stop("a STOP b END", ["END", "STOP"]) == ("a ", "", True)
    assert split_at_stop("xab", ["b", "xab"]) == ("", "", True)
    assert split_at_stop("xabc", ["b", "xabc"]) == ("xa", "", True)


def test_random_streams_match_the_oracle() -> None:
    rng = random.Random(7)
    alphabet = "ab\n#"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        stops = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            for _ in range(rng.randint(0, 3))
        ]
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        pieces = [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]
        assert _stream(pieces, stops) == _oracle(text, stops), (text, stops, pieces)


def test_held_back_text_is_only_ever_a_stop_prefix() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        pending = "".join(rng.choice("xy") for _ in range(rng.randint(0, 8)))
        stops = ["".join(rng.choice("xy") for _ in range(rng.randint(1, 4))) for _ in range(2)]
        send, held, stopped = split_at_stop(pending, stops)
        if not stopped:
            assert send + held == pending
            assert not held or any(s.startswith(held) and s != held for s in stops)
