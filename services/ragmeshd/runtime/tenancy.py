"""What data a call may reach: the collections and document groups of the key behind it.

A key carries collection patterns (`team-a-*,shared`; default `*`, every collection) and
groups (`finance,legal`; default none). A document whose metadata holds `acl` (groups,
comma-separated) is visible to a key holding one of those groups; a document without `acl`
to every key allowed on its collection. The `admin` scope sees every document.

The auth interceptor (runtime/auth.py) sets the call's Principal before the handler runs;
handlers read it with `current()`. A call made with keys turned off has no principal and is
unrestricted. When the coordinator searches for a caller it presents its own key and forwards
the caller's in DELEGATION_HEADER: the principal is then the caller's (runtime/auth.py).
"""

from __future__ import annotations

import contextvars
import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ragmeshd.runtime.scopes import allows

ALL_COLLECTIONS = ("*",)
# The metadata key a document's groups live under, and what a group name may be.
ACL_KEY = "acl"
GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PATTERN = re.compile(r"^[a-z0-9_*?-][a-z0-9_*?-]{0,62}$")
# The caller's key, forwarded by a service (the coordinator) that calls on its behalf. A
# server honours it only from a key holding the `delegate` scope, and only on the read
# methods in DELEGABLE_METHODS, for a forwarded key holding `search.read` or `ask`.
DELEGATION_HEADER = "x-ragmesh-on-behalf-of"
_SEARCH = "/ragmesh.search.v1.SearchService/"
DELEGABLE_METHODS = frozenset(
    f"{_SEARCH}{name}" for name in ("Search", "ListCollections", "GetCollection")
)
DELEGABLE_BY = ("search.read", "ask")
MAX_GROUPS = 64


class TenancyError(ValueError):
    """Collection patterns or groups that cannot be used; the message says why."""


@dataclass(frozen=True)
class Principal:
    """Who a call acts for: the key's id, its collection patterns and its groups.
    `all_documents`: sees every document whatever its `acl` (the `admin` scope)."""

    key_id: str
    collections: tuple[str, ...] = ALL_COLLECTIONS
    groups: tuple[str, ...] = ()
    all_documents: bool = False
    scopes: tuple[str, ...] = ()

    def may_use(self, collection: str) -> bool:
        return any(fnmatch.fnmatchcase(collection, pattern) for pattern in self.collections)

    @property
    def all_collections(self) -> bool:
        return "*" in self.collections

    def document_groups(self) -> tuple[str, ...] | None:
        """The groups to filter documents by; None when every document is visible."""
        return None if self.all_documents else self.groups

    def may_read_interaction(self, owner_key_id: str, collections: Iterable[str]) -> bool:
        """Its own interactions; another key's only with `interactions.export` (or admin),
        and then only when every collection the answer drew on is within its own."""
        if owner_key_id == self.key_id:
            return True
        if not allows(self.scopes, "interactions.export"):
            return False
        return self.all_documents or all(self.may_use(c) for c in collections)

    def boundary(self) -> str:
        """What this principal may see, as text for cache keys (two principals that may see
        the same documents share cached results)."""
        groups = "*" if self.all_documents else ",".join(sorted(self.groups))
        return ",".join(sorted(self.collections)) + "|" + groups


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "ragmesh_principal", default=None
)


# The key the call being handled presented, for a service to forward (DELEGATION_HEADER)
# when it calls another on the caller's behalf. Never logged.
_caller_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ragmesh_caller_key", default=None
)


def current() -> Principal | None:
    """The principal of the call being handled; None with keys turned off."""
    return _current.get()


def caller_key() -> str | None:
    """The key the call being handled presented (None with keys turned off)."""
    return _caller_key.get()


def set_current(principal: Principal | None, key: str | None = None) -> None:
    """Set for the rest of the current task (the handler's own task)."""
    _current.set(principal)
    _caller_key.set(key)


def delegation_metadata() -> tuple[tuple[str, str], ...]:
    """The metadata that makes an outgoing read call act for the current caller."""
    key = caller_key()
    return ((DELEGATION_HEADER, key),) if key else ()


class CollectionDenied(Exception):
    """The call's key may not use the collection; the message names both."""


def check_collection(collection: str, principal: Principal | None = None) -> None:
    """Raise CollectionDenied unless the call's key may use `collection`."""
    principal = principal if principal is not None else current()
    if principal is not None and not principal.may_use(collection):
        raise CollectionDenied(
            f"API key {principal.key_id} may not use collection {collection!r} (its"
            f" collections: {','.join(principal.collections)})"
        )


def visible_collections(names: Iterable[str], principal: Principal | None = None) -> list[str]:
    principal = principal if principal is not None else current()
    return [n for n in names if principal is None or principal.may_use(n)]


def parse_collections(text: str) -> tuple[str, ...]:
    """`"team-a-*, shared"` → ("team-a-*", "shared"): collection names or glob patterns."""
    patterns = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not patterns:
        raise TenancyError("give at least one collection or pattern, e.g. 'team-a-*,shared'")
    for pattern in patterns:
        if not _PATTERN.match(pattern):
            raise TenancyError(
                f"{pattern!r} is not a collection name or pattern: lower-case letters, digits,"
                " '_' and '-', with '*' and '?' as wildcards"
            )
    return patterns


def parse_groups(text: str | Sequence[str]) -> tuple[str, ...]:
    """`"finance,legal"` (or a list of such texts) → ("finance", "legal")."""
    texts = [text] if isinstance(text, str) else list(text)
    groups = tuple(
        dict.fromkeys(g.strip() for piece in texts for g in piece.split(",") if g.strip())
    )
    for group in groups:
        if not GROUP_NAME.match(group):
            raise TenancyError(
                f"{group!r} is not a group name: letters, digits, '.', '_' and '-' (at most"
                " 64 characters)"
            )
    if len(groups) > MAX_GROUPS:
        raise TenancyError(f"{len(groups)} groups; the limit is {MAX_GROUPS}")
    return groups


def acl_text(groups: Sequence[str]) -> str:
    """Groups as they are stored in a document's `acl` metadata."""
    return ",".join(groups)
