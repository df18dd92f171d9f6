"""Parsing an OpenAI-compatible chat-completions event stream (`"stream": true`).

The backend answers with server-sent events, one JSON `chat.completion.chunk` per `data:`
line, and ends with `data: [DONE]`:

    data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}

    data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

    data: [DONE]

Comment lines (`: keep-alive`) and the `event:`, `id:` and `retry:` fields are ignored. A line
that is none of these, a `data:` payload that is not a chunk, or an `{"error": ...}` object is
garbage: the parser raises StreamFormatError, and the caller treats the backend as failed.
"""

from __future__ import annotations

import json
from typing import Any

DONE = "[DONE]"
_IGNORED_FIELDS = ("event", "id", "retry")
# How much of a bad line an error message quotes.
_QUOTE_CHARS = 120


class StreamFormatError(ValueError):
    """The backend's response is not a chat-completions event stream."""


def _quote(text: str) -> str:
    return repr(text[:_QUOTE_CHARS] + ("..." if len(text) > _QUOTE_CHARS else ""))


class ChatStreamParser:
    """Turns event-stream lines into answer text, one line at a time."""

    def __init__(self) -> None:
        # True once `data: [DONE]` arrived; later lines are ignored.
        self.done = False
        # The finish_reason of the last chunk that had one ("stop", "length", ...).
        self.finish_reason: str | None = None
        self.chunks = 0

    @property
    def complete(self) -> bool:
        """Whether the stream ended properly: [DONE], or at least a finish_reason (some
        servers close the stream without [DONE])."""
        return self.done or self.finish_reason is not None

    def feed_line(self, line: str) -> str:
        """The answer text one line carries ("" for none); raises StreamFormatError."""
        line = line.rstrip("\r\n")
        if self.done or not line or line.startswith(":"):
            return ""
        field, colon, value = line.partition(":")
        if not colon:
            raise StreamFormatError(f"not an event-stream line: {_quote(line)}")
        if field in _IGNORED_FIELDS:
            return ""
        if field != "data":
            raise StreamFormatError(f"unexpected event-stream field {field!r} in {_quote(line)}")
        payload = value[1:] if value.startswith(" ") else value
        if payload.strip() == DONE:
            self.done = True
            return ""
        return self._chunk_text(payload)

    def _chunk_text(self, payload: str) -> str:
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise StreamFormatError(f"a data line is not JSON: {_quote(payload)}") from None
        if not isinstance(chunk, dict):
            raise StreamFormatError(f"a data line is not a JSON object: {_quote(payload)}")
        if "error" in chunk:
            raise StreamFormatError(f"the backend reported an error: {_error_text(chunk['error'])}")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise StreamFormatError(f"a chunk has no choices list: {_quote(payload)}")
        self.chunks += 1
        if not choices:
            # A usage-only chunk (stream_options.include_usage).
            return ""
        choice = choices[0]
        if not isinstance(choice, dict):
            raise StreamFormatError(f"a choice is not a JSON object: {_quote(payload)}")
        finish_reason = choice.get("finish_reason")
        if finish_reason is not None:
            self.finish_reason = str(finish_reason)
        delta = choice.get("delta", {})
        if not isinstance(delta, dict):
            raise StreamFormatError(f"a choice's delta is not a JSON object: {_quote(payload)}")
        content = delta.get("content")
        if content is None:
            return ""
        if not isinstance(content, str):
            raise StreamFormatError(f"a delta's content is not a string: {_quote(payload)}")
        return content


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message") or error.get("type") or json.dumps(error)
        return _quote(str(message))
    return _quote(str(error))
