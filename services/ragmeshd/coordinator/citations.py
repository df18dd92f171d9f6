"""Citations in a streamed answer: `[n]` markers that point at no numbered source are removed
as the text streams, and the numbers cited are collected.

A marker may arrive split over chunks (`[` in one, `3]` in the next): text from an opening
bracket on is held back until the marker is complete or cannot be one (a marker is `[`, 1 to
3 digits, `]`). Text that is not a marker passes through unchanged.
"""

from __future__ import annotations

import re

_MARKER = re.compile(r"\[(\d{1,3})\]")
# The longest text a marker can be: "[" + 3 digits + "]".
_MAX_MARKER_CHARS = 5
_PARTIAL = re.compile(r"\[\d{0,3}$")


class CitationFilter:
    """Feed answer chunks in order; get back the text to send, without invalid markers."""

    def __init__(self, source_count: int) -> None:
        self.source_count = source_count
        self.cited: list[int] = []
        self.removed = 0
        self._held = ""

    def _clean(self, text: str) -> str:
        def keep(match: re.Match[str]) -> str:
            number = int(match.group(1))
            if 1 <= number <= self.source_count:
                if number not in self.cited:
                    self.cited.append(number)
                return match.group(0)
            self.removed += 1
            return ""

        return _MARKER.sub(keep, text)

    def feed(self, chunk: str) -> str:
        """The part of the text so far that can be sent now."""
        text = self._held + chunk
        partial = _PARTIAL.search(text[-_MAX_MARKER_CHARS:])
        cut = len(text) - (len(partial.group(0)) if partial else 0)
        self._held = text[cut:]
        return self._clean(text[:cut])

    def finish(self) -> str:
        """Whatever is still held back, at the end of the answer."""
        text, self._held = self._held, ""
        return self._clean(text)
