"""Limits on the files extraction reads (their defaults: ragmeshd.defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from ragmeshd import defaults


@dataclass(frozen=True)
class Limits:
    # Larger files are skipped as "too large" before they are read.
    max_bytes: int = defaults.DOCUMENT_MAX_BYTES
    # Files whose extracted text is longer are skipped as "too large".
    max_text_chars: int = defaults.DOCUMENT_MAX_TEXT_CHARS
