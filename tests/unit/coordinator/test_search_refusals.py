"""The search service refusing the caller's forwarded key a collection (issue 24) is an
answer about the request: the caller hears PERMISSION_DENIED naming the collection, and the
coordinator's breaker on the search service counts nothing (one tenant asking for another's
collection must not open it for everyone)."""

from __future__ import annotations

import grpc

from ragmeshd.coordinator.search_client import (
    SearchForbiddenError,
    SearchUnavailableError,
    _translate,
    _verdict,
)
from ragmeshd.runtime.resilience import Verdict

DETAILS = "API key 00bcb6ee8ef5 may not use collection 'team-b' (its collections: team-a-*)"


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def test_permission_denied_reaches_the_caller_and_spares_the_breaker() -> None:
    denied = _error(grpc.StatusCode.PERMISSION_DENIED, DETAILS)
    assert _verdict(denied) is Verdict.SUCCESS
    translated = _translate(denied, "Search", "team-b")
    assert isinstance(translated, SearchForbiddenError)
    assert translated.code is grpc.StatusCode.PERMISSION_DENIED
    assert "team-b" in translated.details


def test_a_failing_service_is_still_unavailable() -> None:
    down = _error(grpc.StatusCode.UNAVAILABLE, "no healthy upstream")
    assert _verdict(down) is not Verdict.SUCCESS
    assert isinstance(_translate(down, "Search", "team-b"), SearchUnavailableError)
