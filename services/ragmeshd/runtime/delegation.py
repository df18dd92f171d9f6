"""A service calling another on a caller's behalf (runtime/tenancy.py DELEGATION_HEADER):
who may forward a key, for which RPCs, and setting the call's principal for its handler."""

from __future__ import annotations

from typing import Any

import grpc

from ragmeshd.runtime.credentials import CredentialError
from ragmeshd.runtime.keystore import StoredKey
from ragmeshd.runtime.scopes import allows
from ragmeshd.runtime.tenancy import (
    DELEGABLE_BY,
    DELEGABLE_METHODS,
    DELEGATION_HEADER,
    Principal,
    set_current,
)


def delegation_refusal(
    service: StoredKey, caller: StoredKey | None, method: str
) -> tuple[grpc.StatusCode, str] | None:
    """Why `service` may not call `method` for `caller` (None: it may). The service's key
    must hold `delegate`, the method be a read, and the caller's key be usable and hold
    `search.read` or `ask`."""
    denied = grpc.StatusCode.PERMISSION_DENIED
    if not allows(service.scopes, "delegate"):
        return denied, (
            f"API key {service.key_id} lacks the scope 'delegate' that forwarding a caller's"
            f" key ({DELEGATION_HEADER}) needs"
        )
    if method not in DELEGABLE_METHODS:
        return denied, f"{method} cannot be called on a caller's behalf"
    if caller is None or not caller.usable():
        return grpc.StatusCode.UNAUTHENTICATED, (
            "the caller's key forwarded on this call is missing, invalid, revoked or expired"
        )
    if not any(allows(caller.scopes, scope) for scope in DELEGABLE_BY):
        return denied, (
            f"API key {caller.key_id} lacks the scope 'search.read' or 'ask' that {method} on"
            " its behalf needs"
        )
    return None


def forwarded_key(metadata: Any) -> str | None:
    """The caller's key a service forwards (DELEGATION_HEADER); at most one."""
    values = [
        value.decode("latin-1") if isinstance(value, bytes) else str(value)
        for name, value in metadata or ()
        if name.lower() == DELEGATION_HEADER
    ]
    if len(values) > 1:
        raise CredentialError(f"more than one {DELEGATION_HEADER} header")
    return values[0] if values else None


def within(principal: Principal | None, presented: str | None) -> Any:
    """A behaviour wrapper that sets the call's principal (and its key, for delegation)
    before the handler runs, in the handler's own task."""

    def wrap(method: str, behaviour: Any, yields: bool) -> Any:
        if yields:

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                set_current(principal, presented)
                async for response in behaviour(request, context):
                    yield response

            return streaming

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            set_current(principal, presented)
            return await behaviour(request, context)

        return unary

    return wrap
