"""The API key store: generation, scopes, expiry, rate limits and rotation of hashed keys.

A key looks like `rmk_<id>_<secret>`. The store (`STATE_DIR/keys/keys.json`, mode 0600) keeps,
per key, its id, a name, when it was made, whether it is revoked, the SHA-256 of the secret,
its scopes (ragmeshd/runtime/scopes.py), when it expires, and its rate limit; the secret
itself is shown once when the key is made and is never stored. The id is not secret: logs
carry it so a call can be traced to its key. Named keys (the user's `admin` key, one per
service) are written to `STATE_DIR/keys/<name>.key` (mode 0600) so their owner can read them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ragmeshd.runtime.audit import audit
from ragmeshd.runtime.credentials import single_credential
from ragmeshd.runtime.scopes import ADMIN, DEFAULT_SCOPES, SERVICE_COLLECTIONS, SERVICE_SCOPES
from ragmeshd.runtime.tenancy import ALL_COLLECTIONS, Principal

KEY_PREFIX = "rmk"
# A key with a rate limit says so in its own text, so Envoy asks the rate-limit service only
# about such keys (and about anything not shaped like a key without one); a limited key
# presented under the plain prefix is refused (KeyVerifier), so nobody skips their limit.
LIMITED_KEY_PREFIX = "rmkl"
_ID, _SECRET = "[0-9a-f]{12}", "[A-Za-z0-9_-]{43}"
KEY_PATTERN = re.compile(rf"^(?P<prefix>{KEY_PREFIX}l?)_(?P<id>{_ID})_(?P<secret>{_SECRET})$")
_KEY_ID = re.compile(rf"^{KEY_PREFIX}l?_({_ID})_")
# Text shaped like a key without a rate limit, as RE2 (Envoy) reads it, kept short (Envoy
# refuses larger regex programs): such calls skip the rate-limit service. Everything else
# (limited keys, no key, odd text) is asked about; anything else that matches is either a
# key without a limit or refused by the replicas.
UNLIMITED_KEY_RE2 = f"{KEY_PREFIX}_.*"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# The key `ragmesh up` and `ragmesh serve` make on first start, for the person running it.
DEFAULT_KEY_NAME = "admin"
SERVICE_KEY_PREFIX = "service-"
# How long a rotated key keeps working beside its replacement, unless told otherwise.
DEFAULT_ROTATION_GRACE_S = 24 * 3600.0


class ApiKeyError(Exception):
    """A key-store operation failed; the message says why."""


@dataclass(frozen=True)
class RateLimit:
    """A key's limit: `per_second` calls on average, `burst` at once."""

    per_second: float
    burst: int


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    name: str
    secret_sha256: str
    created_at: float
    revoked: bool = False
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    # Seconds since the epoch after which the key is refused; None: never.
    expires_at: float | None = None
    rate_per_s: float | None = None
    rate_burst: int | None = None
    # The id of the key that replaced this one (`ragmesh keys rotate`).
    rotated_to: str | None = None
    # The collections (names or glob patterns) and document groups it may reach
    # (runtime/tenancy.py); keys made before tenancy existed reach every collection.
    collections: tuple[str, ...] = ALL_COLLECTIONS
    groups: tuple[str, ...] = ()

    def principal(self) -> Principal:
        return Principal(
            self.key_id, self.collections, self.groups, ADMIN in self.scopes, self.scopes
        )

    @property
    def rate_limit(self) -> RateLimit | None:
        if self.rate_per_s is None:
            return None
        return RateLimit(self.rate_per_s, self.rate_burst or max(1, round(self.rate_per_s)))

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def usable(self, now: float | None = None) -> bool:
        return not self.revoked and not self.expired(now)

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> StoredKey:
        entry = dict(entry)
        if "scopes" not in entry:
            # Keys made before scopes existed keep what their name says they are for.
            entry["scopes"] = scopes_for_name(entry["name"])
        entry["scopes"] = tuple(entry["scopes"])
        entry["collections"] = tuple(entry.get("collections", ALL_COLLECTIONS))
        entry["groups"] = tuple(entry.get("groups", ()))
        service = entry["name"].removeprefix(SERVICE_KEY_PREFIX)
        if entry["name"].startswith(SERVICE_KEY_PREFIX) and service in SERVICE_SCOPES:
            # A service's key holds what its service calls in this release, whatever an
            # older release stored (the coordinator's lost search.admin and gained delegate).
            entry["scopes"] = SERVICE_SCOPES[service]
            entry["collections"] = SERVICE_COLLECTIONS.get(service, ALL_COLLECTIONS)
        return cls(**entry)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_prefix(*, limited: bool) -> str:
    """The prefix a key's text starts with: LIMITED_KEY_PREFIX when it has a rate limit."""
    return LIMITED_KEY_PREFIX if limited else KEY_PREFIX


def presented_key_id(key: str | None) -> str | None:
    """The id part of a presented key (not proof of anything: logs only)."""
    match = _KEY_ID.match(key or "")
    return match.group(1) if match else None


def presented_key(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The one key a call presents (runtime/credentials.py: CredentialError when it presents
    more than one or one in another form), None when it presents none."""
    return single_credential(metadata)


def scopes_for_name(name: str) -> tuple[str, ...]:
    """The scopes a named key gets when ragmesh makes it: `admin` for the user's key,
    SERVICE_SCOPES for `service-<service>`, DEFAULT_SCOPES for any other; also what a key
    stored before scopes existed holds."""
    if name == DEFAULT_KEY_NAME:
        return (ADMIN,)
    service = name.removeprefix(SERVICE_KEY_PREFIX)
    if name.startswith(SERVICE_KEY_PREFIX) and service in SERVICE_SCOPES:
        return SERVICE_SCOPES[service]
    return DEFAULT_SCOPES


class KeyStore:
    """The hashed keys in one JSON file; every change rewrites it atomically under a lock."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir
        self.path = keys_dir / "keys.json"

    def load(self) -> list[StoredKey]:
        if not self.path.exists():
            return []
        return [StoredKey.from_json(entry) for entry in json.loads(self.path.read_text())["keys"]]

    def get(self, key_id: str) -> StoredKey:
        for key in self.load():
            if key.key_id == key_id:
                return key
        raise ApiKeyError(f"no key with id {key_id!r} (see `ragmesh keys list`)")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(self.keys_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _save(self, keys: list[StoredKey]) -> None:
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(json.dumps({"keys": [asdict(key) for key in keys]}, indent=2))
        os.replace(temporary, self.path)

    def create(
        self,
        name: str,
        *,
        scopes: Sequence[str] = DEFAULT_SCOPES,
        expires_at: float | None = None,
        rate: RateLimit | None = None,
        collections: Sequence[str] = ALL_COLLECTIONS,
        groups: Sequence[str] = (),
    ) -> str:
        """Make a key, store its hash, and return the key (the only time it is seen)."""
        if not _NAME.match(name):
            raise ApiKeyError(
                f"invalid key name {name!r}: letters, digits and . _ : - (at most 64 characters)"
            )
        with self._locked():
            keys = self.load()
            key, stored = _new_key(name, scopes, expires_at, rate)
            stored = replace(stored, collections=tuple(collections), groups=tuple(groups))
            keys.append(stored)
            self._save(keys)
        audit(
            "key created",
            key_id=stored.key_id,
            key_name=name,
            scopes=list(stored.scopes),
            expires_at=expires_at,
            rate_per_s=rate.per_second if rate else None,
            collections=list(stored.collections),
            groups=list(stored.groups),
        )
        return key

    def _update(self, key_id: str, **changes: Any) -> StoredKey:
        with self._locked():
            keys = self.load()
            for index, key in enumerate(keys):
                if key.key_id == key_id:
                    keys[index] = replace(key, **changes)
                    self._save(keys)
                    return keys[index]
        raise ApiKeyError(f"no key with id {key_id!r} (see `ragmesh keys list`)")

    def revoke(self, key_id: str) -> StoredKey:
        revoked = self._update(key_id, revoked=True)
        audit("key revoked", key_id=key_id, key_name=revoked.name)
        return revoked

    def rotate(
        self, key_id: str, grace_s: float = DEFAULT_ROTATION_GRACE_S
    ) -> tuple[str, StoredKey]:
        """A replacement with the same name, scopes and limit; the old key stops working
        `grace_s` from now (or at its own expiry, if sooner). Returns the new key and the old
        record as updated."""
        if grace_s < 0:
            raise ApiKeyError("the grace period cannot be negative")
        with self._locked():
            keys = self.load()
            index = next((i for i, key in enumerate(keys) if key.key_id == key_id), None)
            if index is None:
                raise ApiKeyError(f"no key with id {key_id!r} (see `ragmesh keys list`)")
            old = keys[index]
            if not old.usable():
                raise ApiKeyError(f"key {key_id} is revoked or expired; create a new one instead")
            key, stored = _new_key(old.name, old.scopes, old.expires_at, old.rate_limit)
            stored = replace(stored, collections=old.collections, groups=old.groups)
            ends = time.time() + grace_s
            keys[index] = replace(
                old,
                expires_at=min(ends, old.expires_at) if old.expires_at else ends,
                rotated_to=stored.key_id,
            )
            keys.append(stored)
            self._save(keys)
        audit(
            "key rotated",
            key_id=key_id,
            new_key_id=stored.key_id,
            key_name=old.name,
            grace_s=grace_s,
        )
        return key, keys[index]

    def ensure_named_key(self, name: str, scopes: Sequence[str] | None = None) -> Path:
        """The file holding the key called `name`, made (with its key) if missing."""
        key_file = self.keys_dir / f"{name}.key"
        # A key file never disappears once written, so one that exists needs no lock: keys
        # mounted read-only (a Kubernetes Secret) have no room for the lock file.
        if key_file.exists():
            return key_file
        with self._locked():
            if key_file.exists():
                return key_file
        service = name.removeprefix(SERVICE_KEY_PREFIX)
        collections = SERVICE_COLLECTIONS.get(service, ALL_COLLECTIONS)
        key = self.create(
            name,
            scopes=scopes if scopes is not None else scopes_for_name(name),
            collections=collections if name.startswith(SERVICE_KEY_PREFIX) else ALL_COLLECTIONS,
        )
        with self._locked():
            if not key_file.exists():
                descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(key + "\n")
        return key_file


def _new_key(
    name: str, scopes: Sequence[str], expires_at: float | None, rate: RateLimit | None
) -> tuple[str, StoredKey]:
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    prefix = key_prefix(limited=rate is not None)
    stored = StoredKey(
        key_id,
        name,
        digest(secret),
        time.time(),
        scopes=tuple(scopes),
        expires_at=expires_at,
        rate_per_s=rate.per_second if rate else None,
        rate_burst=rate.burst if rate else None,
    )
    return f"{prefix}_{key_id}_{secret}", stored


def parse_duration(text: str) -> float:
    """`500ms`, `30s`, `5m`, `24h`, `30d` → seconds: the one duration syntax of ragmesh."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|[smhd])", text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit, e.g. 500ms, 30s, 5m, 24h, 30d"
        )
    return float(match.group(1)) * units[match.group(2)]


def parse_rate(text: str) -> float:
    """`50/s`, `600/m`, `1000/h` → calls per second."""
    units = {"s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)/([smh])", text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a rate like 50/s, 600/m or 1000/h")
    return float(match.group(1)) / units[match.group(2)]
