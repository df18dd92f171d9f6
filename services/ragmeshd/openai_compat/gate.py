"""The adapter's own gate, behind Envoy's (issue 23): it admits only Envoy's client certificate
(as the gRPC replicas do: a user's certificate of the same CA, dialing 127.0.0.1:50054
directly, is cut off after the handshake) and it caps every request body before any work.

Envoy checks the credential's form and the rate limit first; the services check the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ragmeshd.identities import ENVOY_UPSTREAM, identity_uri

ENVOY_PEER = identity_uri("envoy", ENVOY_UPSTREAM)

_log = logging.getLogger("ragmesh.openai")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def peer_uris(transport: asyncio.BaseTransport) -> list[str]:
    """The URI SANs of the certificate the peer presented on this TLS connection."""
    ssl_object = transport.get_extra_info("ssl_object")
    certificate = ssl_object.getpeercert() if ssl_object is not None else None
    names = (certificate or {}).get("subjectAltName", ())
    return [value for kind, value in names if kind == "URI"]


class EnvoyOnlyProtocol(H11Protocol):
    """HTTP/1.1 over TLS that serves only connections from Envoy's client certificate; asyncio
    calls connection_made once the handshake (and the CA check) has passed."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        uris = peer_uris(transport)
        if ENVOY_PEER not in uris:
            _log.warning("caller refused: not Envoy", extra={"peer_uris": uris})
            transport.close()
            return
        super().connection_made(transport)


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before the route runs,
    by its Content-Length or, when it streams, as soon as it grows past the limit. The body
    (at most `max_bytes`) is read first and handed to the route whole."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body was complete
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "message": f"the request body is over {self.max_bytes} bytes, this"
                    " route's limit",
                    "type": "invalid_request_error",
                    "code": "request_too_large",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
