"""The server interceptor that checks API keys and their scopes (the keys: runtime/keystore.py).

Every RPC except grpc.health.v1 needs `authorization: Bearer <key>` or `x-api-key: <key>`.
A missing, unknown or revoked key is UNAUTHENTICATED with one message for all three (an
expired one says so); a valid key without the scope the RPC needs is PERMISSION_DENIED naming
that scope. Refusals are logged with the key's id, at most REFUSAL_LOG_BURST lines per
REFUSAL_LOG_WINDOW_S (then one line counting the ones left out), so a flood of bad keys
cannot flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ragmeshd.identities import ENVOY_UPSTREAM, identity_uri
from ragmeshd.runtime.audit import audit
from ragmeshd.runtime.credentials import CredentialError
from ragmeshd.runtime.delegation import delegation_refusal, forwarded_key, within
from ragmeshd.runtime.handlers import HEALTH_PREFIX, wrap_handler
from ragmeshd.runtime.keystore import (
    DEFAULT_KEY_NAME,
    KEY_PATTERN,
    ApiKeyError,
    KeyStore,
    StoredKey,
    digest,
    key_prefix,
    presented_key,
    presented_key_id,
)
from ragmeshd.runtime.scopes import allows, may_create_named, required_scope
from ragmeshd.runtime.tenancy import Principal
from ragmeshd.runtime.tls import peer_uris
from ragmeshd.state import MeshLayout

# Re-exported: callers have imported these from here since before keystore.py existed.
__all__ = ["DEFAULT_KEY_NAME", "ApiKeyError", "AuthInterceptor", "KeyStore", "KeyVerifier"]

_log = logging.getLogger("ragmesh.auth")
# How often a server looks at the store's modification time to pick up revocations.
RELOAD_INTERVAL_S = 1.0
# How long a refused client-streaming call may keep sending before the refusal is sent.
REFUSED_STREAM_DRAIN_S = 2.0
REFUSAL_LOG_WINDOW_S = 10.0
REFUSAL_LOG_BURST = 20
# The certificates a replica admits: Envoy's client certificate and the services' own (they
# call each other through Envoy, but health probes and tools may use them directly).
ENVOY_PEER = identity_uri("envoy", ENVOY_UPSTREAM)
SERVICE_PEER_PREFIX = identity_uri("service", "")
PEER_REFUSED_MESSAGE = (
    "this replica admits only Envoy's and the mesh services' certificates: call the mesh"
    " through Envoy's client listener"
)
UNAUTHENTICATED_MESSAGE = (
    "missing or invalid API key: send `authorization: Bearer <key>` or `x-api-key: <key>`"
)


@dataclass(frozen=True)
class Verdict:
    """What the key check decided: a status to refuse with (None: allowed) and why."""

    code: grpc.StatusCode | None
    message: str = ""
    key: StoredKey | None = None
    # Whose data boundary the call runs under (the caller's when a service delegates).
    principal: Principal | None = None


class KeyVerifier:
    """Checks presented keys against the store, re-reading it when it changes."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._by_id: dict[str, StoredKey] = {}
        # The store file's identity when last read: every save replaces the file (a new
        # inode), and two saves within one timestamp tick still differ by inode.
        self._loaded_version: tuple[int, int, int] | None = None
        self._checked_at = 0.0

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < RELOAD_INTERVAL_S and self._loaded_version is not None:
            return
        self._checked_at = now
        try:
            status = self._store.path.stat()
        except FileNotFoundError:
            self._by_id, self._loaded_version = {}, None
            return
        version = (status.st_ino, status.st_mtime_ns, status.st_size)
        if version != self._loaded_version:
            self._by_id = {key.key_id: key for key in self._store.load()}
            self._loaded_version = version

    def authenticate(self, presented: str | None) -> StoredKey | None:
        """The stored key whose secret was presented (revoked or expired ones included)."""
        self._refresh()
        match = KEY_PATTERN.match(presented or "")
        # Compare against a real or a dummy digest alike, so timing says nothing about
        # which part of the key was wrong.
        stored = self._by_id.get(match["id"]) if match else None
        expected = stored.secret_sha256 if stored else digest("")
        offered = digest(match["secret"]) if match else digest("-")
        # A limited key must carry its prefix: under the plain one Envoy would not ask the
        # rate-limit service about it.
        limited = stored is not None and stored.rate_limit is not None
        prefix_fits = match is not None and match["prefix"] == key_prefix(limited=limited)
        return stored if hmac.compare_digest(expected, offered) and stored and prefix_fits else None

    def is_valid(self, presented: str | None) -> bool:
        stored = self.authenticate(presented)
        return stored is not None and stored.usable()

    def check(self, presented: str | None, method: str, forwarded: str | None = None) -> Verdict:
        """May the holder of `presented` call `method` (for the holder of `forwarded`, a
        caller's key a service passes on, when given)?"""
        stored = self.authenticate(presented)
        if stored is None or stored.revoked:
            return Verdict(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE, stored)
        if stored.expired():
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stored.expires_at))
            return Verdict(
                grpc.StatusCode.UNAUTHENTICATED,
                f"API key {stored.key_id} expired at {when}; ask for a new key",
                stored,
            )
        if forwarded is not None:
            return self._delegated(stored, forwarded, method)
        needed = required_scope(method)
        if not allows(stored.scopes, needed) and not may_create_named(
            stored.scopes, stored.collections, method
        ):
            return Verdict(
                grpc.StatusCode.PERMISSION_DENIED,
                f"API key {stored.key_id} lacks the scope {needed!r} that {method} needs",
                stored,
            )
        return Verdict(None, key=stored, principal=stored.principal())

    def _delegated(self, service: StoredKey, forwarded: str, method: str) -> Verdict:
        """A service's call for a caller (runtime/delegation.py): within the caller's
        collections and groups, or refused."""
        caller = self.authenticate(forwarded)
        refusal = delegation_refusal(service, caller, method)
        if refusal is not None:
            return Verdict(refusal[0], refusal[1], service)
        assert caller is not None
        return Verdict(None, key=service, principal=caller.principal())


class RefusalLog:
    """Logs refused calls, at most `burst` lines per `window_s`; the rest are counted."""

    def __init__(self, window_s: float = REFUSAL_LOG_WINDOW_S, burst: int = REFUSAL_LOG_BURST):
        self._window_s, self._burst = window_s, burst
        self._window_start = time.monotonic()
        self._logged = self._suppressed = 0

    def refused(
        self,
        method: str,
        code: grpc.StatusCode,
        key_id: str | None,
        peer: str,
        reason: str = "",
    ) -> None:
        """Record a refused call in the audit log (runtime/audit.py)."""
        now = time.monotonic()
        if now - self._window_start >= self._window_s:
            if self._suppressed:
                audit(
                    "refused calls left out of the log",
                    suppressed=self._suppressed,
                    window_s=self._window_s,
                )
            self._window_start, self._logged, self._suppressed = now, 0, 0
        if self._logged >= self._burst:
            self._suppressed += 1
            return
        self._logged += 1
        audit(
            "call refused",
            grpc_method=method,
            grpc_code=code.name,
            reason=reason,
            key_id=key_id,
            peer=peer,
        )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every RPC but health checks without a valid key holding the RPC's scope,
    before any handler runs. With `mesh_peers_only` (a replica under mTLS), also refuses
    every call, health checks included, whose certificate is not Envoy's or a service's:
    a user's certificate from the same CA cannot bypass Envoy's limits and logs."""

    def __init__(
        self,
        verifier: KeyVerifier,
        refusals: RefusalLog | None = None,
        *,
        mesh_peers_only: bool = False,
    ) -> None:
        self._verifier = verifier
        self._refusals = refusals or RefusalLog()
        self._mesh_peers_only = mesh_peers_only

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await self._intercept(continuation, handler_call_details)
        if self._mesh_peers_only and handler is not None:
            return wrap_handler(handler, handler_call_details.method, self._peer_guard)
        return handler

    async def _intercept(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(HEALTH_PREFIX):
            return await continuation(handler_call_details)
        try:
            metadata = handler_call_details.invocation_metadata
            presented = presented_key(metadata)
            verdict = self._verifier.check(presented, method, forwarded_key(metadata))
        except CredentialError as error:
            presented, verdict = None, Verdict(grpc.StatusCode.UNAUTHENTICATED, str(error))
        handler = await continuation(handler_call_details)
        if verdict.code is None:
            if handler is None:
                return handler
            # The handler's own task learns whose data it may reach (runtime/tenancy.py).
            return wrap_handler(handler, method, within(verdict.principal, presented))
        key_id = verdict.key.key_id if verdict.key else presented_key_id(presented)
        code = verdict.code

        def record(peer: str) -> None:
            self._refusals.refused(method, code, key_id, peer, verdict.message)

        return _refusing(handler, verdict, record)

    def _peer_guard(self, method: str, behaviour: Any, yields: bool) -> Any:
        """`behaviour`, preceded by the check that the caller is Envoy or a mesh service."""

        async def check(context: grpc.aio.ServicerContext) -> None:
            uris = peer_uris(context)
            if any(uri == ENVOY_PEER or uri.startswith(SERVICE_PEER_PREFIX) for uri in uris):
                return
            self._refusals.refused(
                method,
                grpc.StatusCode.PERMISSION_DENIED,
                None,
                f"{context.peer()} {uris}",
                "not Envoy's or a mesh service's certificate",
            )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, PEER_REFUSED_MESSAGE)

        if yields:

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context)
                async for response in behaviour(request, context):
                    yield response

            return guarded_stream

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await behaviour(request, context)

        return guarded


def _refusing(
    handler: grpc.RpcMethodHandler | None, verdict: Verdict, record: Callable[[str], None]
) -> grpc.RpcMethodHandler:
    """A handler of the same shape that answers with the verdict's status."""
    code = verdict.code or grpc.StatusCode.UNAUTHENTICATED

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        record(context.peer())
        await context.abort(code, verdict.message)

    async def refuse_stream(requests: Any, context: grpc.aio.ServicerContext) -> None:
        # Answering while the client is still sending makes some clients report their own
        # failed write (INTERNAL) instead of this status: take what it sends, briefly, first.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(REFUSED_STREAM_DRAIN_S):
                async for _ in requests:
                    pass
        await refuse(None, context)

    if handler is None or handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse_stream)
    return grpc.stream_stream_rpc_method_handler(refuse_stream)


def api_key_interceptor(
    state_dir: Path, required: bool, *, mesh_peers_only: bool = False
) -> AuthInterceptor | None:
    """The server's key check (None when keys are turned off). Makes the `admin` key on a
    first start (no key store yet), so a fresh server is usable: its key is in
    STATE_DIR/keys/admin.key. A store made elsewhere (a Kubernetes Secret mounted read-only,
    holding keys.json and only this pod's own key) is used as it is: a server never needs the
    admin key's file. `mesh_peers_only`: admit only Envoy's and the services' certificates
    (under mTLS)."""
    if not required:
        return None
    store = KeyStore(MeshLayout(state_dir).keys_dir)
    if not store.path.exists():
        store.ensure_named_key(DEFAULT_KEY_NAME)
    return AuthInterceptor(KeyVerifier(store), mesh_peers_only=mesh_peers_only)
