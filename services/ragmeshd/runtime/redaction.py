"""The one redaction of secrets, for every log line, error message and `config show`: a URL's
password (whatever it contains, '@' included), a `password=` parameter, and the secret part of
an API key of any shape (rmk_<id>_<secret>, rmkl_<id>_<secret>: the id stays, it is not
secret)."""

from __future__ import annotations

import re

REDACTED = "***"

_SECRET_PATTERNS = (
    # scheme://user:<password>@host: up to the last '@' of the URL, so a password holding an
    # '@' is redacted whole (redacting a little more of a malformed URL is the safe side).
    re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^\s]*(?P<tail>@)"),
    re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'[^']*'|\"[^\"]*\"|[^&\s;]*)(?P<tail>)", re.I),
    re.compile(r"(?P<head>\brmkl?_[0-9a-f]+_)[A-Za-z0-9_-]+(?P<tail>)"),
)


def redact(text: str) -> str:
    """`text` with every secret it shows replaced by ***."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(rf"\g<head>{REDACTED}\g<tail>", text)
    return text
