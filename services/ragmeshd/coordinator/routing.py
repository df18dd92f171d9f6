"""Deciding who answers a query: pure functions of the request, the retrieval confidence and
what is configured and healthy (no I/O, so every branch is unit-tested).

The decision order:
1. The request forces a side: that side (NONE means "context only"). A forced backend that is
   not configured is the caller's mistake (ForcedBackendMissingError).
2. No backend is configured: NONE, and the answer is the retrieved context with a note.
3. The confidence reaches the threshold and the local backend is healthy: LOCAL.
4. The remote backend is configured: REMOTE.
5. Otherwise the local backend is the only one: LOCAL, whatever the confidence or its probe.

The side that was not chosen is the fallback when the chosen one fails, if it is configured
(and, for local, not known to be unhealthy).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Side(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"
    NONE = "none"


class ForcedBackendMissingError(ValueError):
    """The request forces a backend that is not configured."""


@dataclass(frozen=True)
class Route:
    """Where a query goes first, why, and who answers if that fails."""

    first: Side
    reason: str
    fallback: Side | None = None


def check_forced(forced: Side | None, *, local_configured: bool, remote_configured: bool) -> None:
    """Raise ForcedBackendMissingError when the request forces a backend that is absent."""
    configured = {Side.LOCAL: local_configured, Side.REMOTE: remote_configured}
    if forced in configured and not configured[forced]:
        assert forced is not None
        raise ForcedBackendMissingError(
            f"force={forced.name} but no {forced.value} backend is configured (set"
            f" RAGMESH_COORDINATOR__{forced.name}_URL)"
        )


def needs_local_probe(
    forced: Side | None, confidence: float, threshold: float, *, local_configured: bool
) -> bool:
    """Whether `decide` needs the local backend's health (probe only when it matters)."""
    return forced is None and local_configured and confidence >= threshold


def decide(
    forced: Side | None,
    confidence: float,
    threshold: float,
    *,
    local_configured: bool,
    remote_configured: bool,
    local_healthy: bool | None,
) -> Route:
    """The route for one query. `local_healthy` is None when the local backend was not
    probed (see needs_local_probe)."""
    configured = {Side.LOCAL: local_configured, Side.REMOTE: remote_configured}

    if forced is Side.NONE:
        return Route(Side.NONE, "the request asked for the context only")
    if forced is not None:
        check_forced(forced, local_configured=local_configured, remote_configured=remote_configured)
        other = Side.REMOTE if forced is Side.LOCAL else Side.LOCAL
        return Route(
            forced,
            f"the request forced the {forced.value} backend",
            other if configured[other] else None,
        )

    if not local_configured and not remote_configured:
        return Route(Side.NONE, "no language-model backend is configured")

    comparison = f"confidence {confidence:.2f} {'>=' if confidence >= threshold else '<'}"
    comparison += f" threshold {threshold:.2f}"
    if local_configured and confidence >= threshold and local_healthy:
        return Route(
            Side.LOCAL,
            f"{comparison} and the local backend is healthy",
            Side.REMOTE if remote_configured else None,
        )
    if remote_configured:
        if not local_configured:
            why = f"no local backend is configured ({comparison})"
        elif confidence < threshold:
            why = comparison
        else:
            why = f"{comparison} but the local backend's health probe failed"
        usable_local = local_configured and local_healthy is not False
        return Route(Side.REMOTE, why, Side.LOCAL if usable_local else None)
    if confidence < threshold:
        why = f"{comparison} but the local backend is the only one configured"
    else:
        why = f"{comparison}; the local backend's health probe failed but it is the only one"
    return Route(Side.LOCAL, why)
