"""The one redaction (runtime/redaction.py): no key secret or URL password survives, whatever
the key's shape or the password's characters, wherever it sits in a line."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from ragmeshd.runtime.redaction import redact

SECRET_CHARS = string.ascii_letters + string.digits + "_-"
secrets = st.text(SECRET_CHARS, min_size=12, max_size=43)
key_ids = st.text("0123456789abcdef", min_size=4, max_size=16)
prefixes = st.sampled_from(["rmk_", "rmkl_"])
surroundings = st.text(string.ascii_letters + " ,:;\"'()", max_size=20)
# A password may hold '@', ':' and '/'-free punctuation (libpq accepts them unencoded).
passwords = st.text(string.ascii_letters + string.digits + "@:!$%^*+=~", min_size=6, max_size=24)


@given(prefixes, key_ids, secrets, surroundings, surroundings)
def test_no_key_secret_survives(
    prefix: str, key_id: str, secret: str, before: str, after: str
) -> None:
    line = f"{before} {prefix}{key_id}_{secret} {after}"
    # The id stays (it names the key and is not secret); the secret goes.
    assert redact(line) == f"{before} {prefix}{key_id}_*** {after}"


@given(passwords, surroundings)
def test_no_url_password_survives(password: str, after: str) -> None:
    line = f"connecting to postgresql://ragmesh:{password}@db.internal:5432/ragmesh {after}"
    expected = f"connecting to postgresql://ragmesh:***@db.internal:5432/ragmesh {after}"
    assert redact(line) == expected


@given(passwords)
def test_no_password_parameter_survives(password: str) -> None:
    redacted = redact(f"host=db password={password.replace('&', '')} sslmode=verify-full")
    assert password.replace("&", "") not in redacted
    assert "sslmode=verify-full" in redacted
