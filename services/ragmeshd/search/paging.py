"""ListDocuments' page tokens: a backend's cursor (pgvector: the last id; Qdrant: the next
point) as an opaque string, and back; a token no backend made is InvalidPageTokenError."""

from __future__ import annotations

import base64
import binascii

from ragmeshd.search.backends.base import InvalidPageTokenError


def encode_token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=") if raw else ""


def decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidPageTokenError() from None
