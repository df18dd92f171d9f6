"""A streaming client of one OpenAI-compatible chat-completions backend (llama.cpp's
server, vLLM, a hosted API...).

Everything that can go wrong with a backend (refused connection, an HTTP error, a stream that
is garbage, ends early or is empty, silence longer than the idle timeout, an answer longer
than the deadline) raises BackendError, which the coordinator counts against the backend's
circuit breaker and answers with a fallback. Nothing a backend does becomes INTERNAL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import httpx

from ragmeshd.coordinator.sse import ChatStreamParser, StreamFormatError

_log = logging.getLogger("ragmesh.coordinator.backend")

# How much of an HTTP error body an error message quotes.
_ERROR_BODY_CHARS = 200

ChatMessage = dict[str, str]
T = TypeVar("T")


class BackendError(Exception):
    """The backend did not produce a proper answer; the message says what went wrong."""


@dataclass(frozen=True)
class BackendConfig:
    """Where a backend is and how long it may take."""

    # "local" or "remote", for logs and messages.
    name: str
    # The API's base URL, the part before /chat/completions (e.g. http://127.0.0.1:8080/v1).
    base_url: str
    # The model name sent with each request (a llama.cpp server ignores it).
    model: str
    api_key: str | None
    connect_timeout_s: float
    idle_timeout_s: float
    deadline_s: float
    temperature: float


def read_api_key(path: str) -> str | None:
    """The API key in `path` (surrounding whitespace removed), or None for no path."""
    if not path:
        return None
    key = Path(path).expanduser().read_text().strip()
    if not key:
        raise ValueError(f"the API key file {path} is empty")
    return key


class AnswerBackend(Protocol):
    """What the coordinator needs of a language-model backend: this module's ChatBackend (an
    OpenAI-compatible API) or llm_service_backend.LlmServiceBackend (the mesh's llm service)."""

    config: BackendConfig

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def aclose(self) -> None: ...

    async def healthy(self, timeout_s: float) -> bool: ...

    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, deadline_s: float | None = None
    ) -> AsyncIterator[str]: ...


class ChatBackend:
    """Streams chat completions from one backend; safe to share between concurrent calls."""

    def __init__(self, config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        headers = {"Accept": "text/event-stream"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(
                connect=config.connect_timeout_s,
                read=config.idle_timeout_s,
                write=config.idle_timeout_s,
                pool=config.connect_timeout_s,
            ),
            transport=transport,
        )

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model(self) -> str:
        """The model name answers are reported with."""
        return self.config.model

    async def aclose(self) -> None:
        await self._client.aclose()

    async def healthy(self, timeout_s: float) -> bool:
        """Whether GET {base_url}/models answers 2xx within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._client.get("models")
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            _log.info(
                "backend health probe failed",
                extra={"backend": self.name, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        return response.is_success

    async def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, deadline_s: float | None = None
    ) -> AsyncIterator[str]:
        """The answer's text pieces as the backend produces them (none empty).

        `deadline_s` (default: the configured deadline) bounds the whole answer; each wait
        for data is also bounded by the idle timeout. Raises BackendError.
        """
        loop = asyncio.get_running_loop()
        budget_s = self.config.deadline_s if deadline_s is None else deadline_s
        deadline = loop.time() + min(budget_s, self.config.deadline_s)
        body = {
            "model": self.config.model,
            "messages": messages,
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": self.config.temperature,
        }
        parser = ChatStreamParser()
        produced = 0
        try:
            request = self._client.build_request("POST", "chat/completions", json=body)
            response = await self._within(
                self._client.send(request, stream=True), deadline, "the response headers"
            )
            try:
                if not response.is_success:
                    body_bytes = await self._within(response.aread(), deadline, "the error body")
                    body_text = " ".join(body_bytes.decode(errors="replace").split())
                    raise BackendError(
                        f"HTTP {response.status_code}: {body_text[:_ERROR_BODY_CHARS]!r}"
                    )
                lines = response.aiter_lines()
                while not parser.done:
                    try:
                        line = await self._within(anext(lines), deadline, "the next chunk")
                    except StopAsyncIteration:
                        break
                    text = parser.feed_line(line)
                    if text:
                        produced += len(text)
                        yield text
            finally:
                await response.aclose()
        except StreamFormatError as exc:
            raise BackendError(f"garbage in the stream: {exc}") from None
        except httpx.TimeoutException as exc:
            raise BackendError(
                f"timed out ({type(exc).__name__}; idle limit {self.config.idle_timeout_s:g} s)"
            ) from None
        except (httpx.HTTPError, OSError) as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}") from None
        if not parser.complete:
            raise BackendError("the stream ended before [DONE]")
        if not produced:
            raise BackendError("the answer is empty")

    async def _within(self, awaitable: Awaitable[T], deadline: float, what: str) -> T:
        """Await `awaitable` for at most the idle timeout and never past `deadline`."""
        remaining = deadline - asyncio.get_running_loop().time()
        limit = min(remaining, self.config.idle_timeout_s)
        try:
            async with asyncio.timeout(max(limit, 0.0)):
                return await awaitable
        except TimeoutError:
            if limit < self.config.idle_timeout_s:
                raise BackendError(
                    f"the answer took longer than its deadline (waiting for {what})"
                ) from None
            raise BackendError(
                f"no data for {self.config.idle_timeout_s:g} s (waiting for {what})"
            ) from None
