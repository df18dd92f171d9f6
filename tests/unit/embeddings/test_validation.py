"""Embed request validation: every rejection names the input and the limit."""

import pytest

from ragmeshd.embeddings.validation import InvalidRequestError, check_inputs, check_token_counts

LIMITS = {"max_client_batch": 3, "max_input_chars": 10}


def test_valid_inputs_pass() -> None:
    check_inputs(["a", "bb", "0123456789"], **LIMITS)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "inputs is empty: send 1 to 3 texts"),
        (["a", "b", "c", "d"], "inputs has 4 texts; the limit is 3 per call"),
        (["ok", ""], r"inputs\[1\] is empty"),
        (["ok", "   "], r"inputs\[1\] is empty or only whitespace"),
        (["ok", "x" * 11], r"inputs\[1\] has 11 characters; the limit is 10"),
    ],
)
def test_bad_inputs_are_named(inputs: list[str], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_inputs(inputs, **LIMITS)


def test_token_window_is_enforced_when_truncation_is_off() -> None:
    check_token_counts([5, 256], max_sequence_length=256)
    with pytest.raises(InvalidRequestError, match=r"inputs\[1\] is 300 tokens long.*256 tokens"):
        check_token_counts([5, 300], max_sequence_length=256)
