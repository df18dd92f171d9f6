"""Retrieved text stays fenced: no passage, whatever it holds, can open or close a delimiter
(coordinator/prompt.py neutralise); five brackets in a row used to leave three behind."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ragmeshd.coordinator.prompt import CLOSE_BRACKETS, OPEN_BRACKETS, neutralise

bracket_heavy = st.lists(
    st.sampled_from(["<", ">", " ", "a", "\n", "<<<", ">>>"]), max_size=30
).map("".join)


@given(st.one_of(bracket_heavy, st.text(max_size=60)))
def test_no_text_keeps_a_delimiter(text: str) -> None:
    fenced = neutralise(text)
    assert OPEN_BRACKETS not in fenced
    assert CLOSE_BRACKETS not in fenced


def test_long_runs_and_plain_text() -> None:
    assert OPEN_BRACKETS not in neutralise("<<<<<")
    assert neutralise("a < b > c") == "a < b > c"
