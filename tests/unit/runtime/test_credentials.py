"""One credential per request (runtime/credentials.py): exactly one of the two accepted forms,
anything else refused with a message naming them, whatever the order or the decoy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragmeshd.runtime.credentials import ACCEPTED_FORMS, CredentialError, single_credential

KEY = "rmkl_0123abcd_AbC-dEf_123"


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", f"Bearer {KEY}")],
        [("authorization", f"bearer {KEY}")],
        [("x-api-key", KEY)],
        [("x-request-id", "r1"), ("x-api-key", KEY.encode())],
    ],
)
def test_one_accepted_form_gives_the_key(metadata: list[tuple[str, object]]) -> None:
    assert single_credential(metadata) == KEY


def test_no_credential_is_none() -> None:
    assert single_credential([("x-request-id", "r1")]) is None
    assert single_credential(None) is None


@pytest.mark.parametrize(
    "metadata",
    [
        # The decoy: a Basic header beside the real key.
        [("x-api-key", KEY), ("authorization", "Basic eDp5")],
        [("authorization", "Basic eDp5"), ("x-api-key", KEY)],
        [("authorization", f"Bearer {KEY}"), ("x-api-key", KEY)],
        [("authorization", f"Bearer {KEY}"), ("authorization", f"Bearer {KEY}")],
        [("x-api-key", KEY), ("x-api-key", "rmk_ffff_other")],
        [("Authorization", f"Bearer {KEY}"), ("X-Api-Key", KEY)],
        [("authorization", "Basic eDp5")],
        [("authorization", f"Digest {KEY}")],
        [("authorization", f"Bearer  {KEY}")],
        [("authorization", f" Bearer {KEY}")],
        [("authorization", f"Bearer {KEY} ")],
        [("authorization", f"Bearer\t{KEY}")],
        [("authorization", "Bearer")],
        [("x-api-key", f" {KEY}")],
        [("x-api-key", f"{KEY}\n")],
        [("x-api-key", f"{KEY}, {KEY}")],
        [("x-api-key", "")],
    ],
)
def test_anything_else_is_refused_naming_the_accepted_forms(
    metadata: list[tuple[str, object]],
) -> None:
    with pytest.raises(CredentialError) as refused:
        single_credential(metadata)
    assert ACCEPTED_FORMS in str(refused.value)


header = st.sampled_from(["authorization", "x-api-key", "Authorization", "X-API-KEY"])
value = st.one_of(st.just(f"Bearer {KEY}"), st.just(KEY), st.text(max_size=40))


@given(st.lists(st.tuples(header, value), min_size=2, max_size=5))
def test_two_or_more_credential_headers_are_always_refused(
    metadata: list[tuple[str, str]],
) -> None:
    with pytest.raises(CredentialError):
        single_credential(metadata)
