"""API keys: generation, the hashed key store, and the server interceptor that checks them.

A key looks like `rmk_<id>_<secret>`. The store (`STATE_DIR/keys/keys.json`) keeps, per key,
its id, a name, when it was made, whether it is revoked, and the SHA-256 of the secret; the
secret itself is shown once when the key is made and is never stored by servers. The key made
on first start for the user, and one per service for service-to-service calls, are written
to `STATE_DIR/keys/<name>.key` (mode 0600) so the owner can read them.

Every RPC except grpc.health.v1 needs `authorization: Bearer <key>` or `x-api-key: <key>`.
A missing, unknown or revoked key is UNAUTHENTICATED with one message for all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from services.runtime.interceptors import HEALTH_PREFIX

KEY_PREFIX = "rmk"
_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# The key `ragmesh up` and `ragmesh serve` make on first start, for the person running it.
DEFAULT_KEY_NAME = "admin"
# How often a server looks at the store's modification time to pick up revocations.
RELOAD_INTERVAL_S = 1.0
# How long a refused client-streaming call may keep sending before the refusal is sent.
REFUSED_STREAM_DRAIN_S = 2.0
UNAUTHENTICATED_MESSAGE = (
    "missing or invalid API key: send `authorization: Bearer <key>` or `x-api-key: <key>`"
)


class ApiKeyError(Exception):
    """A key-store operation failed; the message says why."""


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    name: str
    secret_sha256: str
    created_at: float
    revoked: bool = False


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """The hashed keys in one JSON file; every change rewrites it atomically under a lock."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir
        self.path = keys_dir / "keys.json"

    def load(self) -> list[StoredKey]:
        if not self.path.exists():
            return []
        return [StoredKey(**entry) for entry in json.loads(self.path.read_text())["keys"]]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.keys_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _save(self, keys: list[StoredKey]) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"keys": [asdict(key) for key in keys]}, indent=2))
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path)

    def create(self, name: str) -> str:
        """Make a key, store its hash, and return the key (the only time it is seen)."""
        if not _NAME.match(name):
            raise ApiKeyError(
                f"invalid key name {name!r}: letters, digits and . _ : - (at most 64 characters)"
            )
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self._locked():
            keys = self.load()
            keys.append(StoredKey(key_id, name, _digest(secret), time.time()))
            self._save(keys)
        return f"{KEY_PREFIX}_{key_id}_{secret}"

    def revoke(self, key_id: str) -> StoredKey:
        with self._locked():
            keys = self.load()
            for index, key in enumerate(keys):
                if key.key_id == key_id:
                    keys[index] = StoredKey(**{**asdict(key), "revoked": True})
                    self._save(keys)
                    return keys[index]
        raise ApiKeyError(f"no key with id {key_id!r} (see `ragmesh keys list`)")

    def ensure_named_key(self, name: str) -> Path:
        """The file holding the key called `name`, made (with its key) if missing."""
        key_file = self.keys_dir / f"{name}.key"
        # A key file never disappears once written, so one that exists needs no lock: keys
        # mounted read-only (a Kubernetes Secret) have no room for the lock file.
        if key_file.exists():
            return key_file
        with self._locked():
            if key_file.exists():
                return key_file
        key = self.create(name)
        with self._locked():
            if not key_file.exists():
                descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(key + "\n")
        return key_file


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

    def is_valid(self, presented: str | None) -> bool:
        self._refresh()
        match = _KEY.match(presented or "")
        # Compare against a real or a dummy digest alike, so timing says nothing about
        # which part of the key was wrong.
        stored = self._by_id.get(match.group(1)) if match else None
        expected = stored.secret_sha256 if stored else _digest("")
        offered = _digest(match.group(2)) if match else _digest("-")
        digests_match = hmac.compare_digest(expected, offered)
        return digests_match and stored is not None and not stored.revoked


def presented_key(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The key in `authorization: Bearer …` or `x-api-key`, if any."""
    for name, value in metadata or ():
        text = value.decode() if isinstance(value, bytes) else str(value)
        if name == "authorization" and text[:7].lower() == "bearer ":
            return text[7:].strip()
        if name == "x-api-key":
            return text.strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every RPC but health checks without a valid key, before any handler runs."""

    def __init__(self, verifier: KeyVerifier) -> None:
        self._verifier = verifier

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(HEALTH_PREFIX):
            return await continuation(handler_call_details)
        if self._verifier.is_valid(presented_key(handler_call_details.invocation_metadata)):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        return _refusing(handler)


def _refusing(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    """A handler of the same shape that answers UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

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


def api_key_interceptor(state_dir: Path, required: bool) -> AuthInterceptor | None:
    """The server's key check (None when keys are turned off). Makes the `admin` key on a
    first start, so a fresh server is usable: its key is in STATE_DIR/keys/admin.key."""
    if not required:
        return None
    store = KeyStore(state_dir / "keys")
    store.ensure_named_key(DEFAULT_KEY_NAME)
    return AuthInterceptor(KeyVerifier(store))
