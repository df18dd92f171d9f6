"""Per-key token buckets and the rate-limit service's answers (no processes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ragmeshd.envoy.security import UNLIMITED_KEY_VALUES
from ragmeshd.ratelimit.buckets import KeyBuckets
from ragmeshd.ratelimit.server import KeyRateLimiter
from ragmeshd.runtime.auth import KeyVerifier
from ragmeshd.runtime.keystore import KeyStore, RateLimit
from ragmeshd.runtime.rls_messages import OK, OVER_LIMIT, RateLimitRequest, RateLimitResponse


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    buckets = KeyBuckets(clock)
    limit = RateLimit(per_second=5, burst=3)
    assert [buckets.take("k", limit).allowed for _ in range(4)] == [True, True, True, False]
    refused = buckets.take("k", limit)
    assert refused.retry_after_s == pytest.approx(0.2)
    clock.now = 0.2
    assert buckets.take("k", limit).allowed
    assert not buckets.take("k", limit).allowed
    clock.now = 100.0  # a long pause refills only up to the burst
    assert [buckets.take("k", limit).allowed for _ in range(4)] == [True, True, True, False]
    assert buckets.take("other", limit).allowed  # each key its own bucket


async def test_the_service_limits_verified_keys_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ragmeshd.runtime.auth.RELOAD_INTERVAL_S", 0.0)
    store = KeyStore(tmp_path / "keys")
    limited = store.create("limited", rate=RateLimit(1, 1))
    free = store.create("free")
    limiter = KeyRateLimiter(KeyVerifier(store), KeyBuckets(Clock()))

    def ask(header: str, value: str) -> RateLimitResponse:
        request = RateLimitRequest(domain="ragmesh")
        request.descriptors.add().entries.add(key=header, value=value)
        wire = RateLimitResponse.FromString(
            limiter.decide_request(
                RateLimitRequest.FromString(request.SerializeToString())
            ).SerializeToString()
        )
        return wire

    assert ask("authorization", f"Bearer {limited}").overall_code == OK
    over = ask("x-api-key", limited)
    assert over.overall_code == OVER_LIMIT
    headers = {h.key: h.value for h in over.response_headers_to_add}
    assert headers == {"retry-after": "1", "retry-after-ms": "1000"}
    # A wrong secret with the limited key's id spends nothing (and is not limited here:
    # the replicas refuse it).
    forged = limited[: limited.rindex("_") + 1] + "A" * 43
    assert ask("authorization", f"Bearer {forged}").overall_code == OK
    assert all(ask("authorization", f"Bearer {free}").overall_code == OK for _ in range(5))


async def test_a_decoy_credential_beside_a_limited_key_is_over_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bypass of issue 23: `x-api-key: <limited key>` plus `authorization: Basic …` made
    the service judge the decoy. Two credentials in one call are never OK here (Envoy refuses
    them before asking); one credential within its burst is, from the very first call."""
    monkeypatch.setattr("ragmeshd.runtime.auth.RELOAD_INTERVAL_S", 0.0)
    store = KeyStore(tmp_path / "keys")
    limited = store.create("limited", rate=RateLimit(1 / 60, 1))
    limiter = KeyRateLimiter(KeyVerifier(store), KeyBuckets(Clock()))

    def ask(*entries: tuple[str, str]) -> int:
        request = RateLimitRequest(domain="ragmesh")
        for header, value in entries:
            request.descriptors.add().entries.add(key=header, value=value)
        return int(limiter.decide_request(request).overall_code)

    decoy = ("authorization", "Basic eDp5")
    assert ask(("x-api-key", limited), decoy) == OVER_LIMIT
    assert ask(decoy, ("x-api-key", limited)) == OVER_LIMIT
    assert ask(("x-api-key", limited)) == OK  # the first call of its burst passes
    assert ask(("x-api-key", limited)) == OVER_LIMIT


def test_a_limited_key_says_so_and_is_refused_without_its_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Envoy skips the rate-limit service for keys shaped like unlimited ones
    (UNLIMITED_KEY_VALUES); a limited key in that shape must not authenticate."""
    monkeypatch.setattr("ragmeshd.runtime.auth.RELOAD_INTERVAL_S", 0.0)
    store = KeyStore(tmp_path / "keys")
    limited = store.create("limited", rate=RateLimit(5, 5))
    free = store.create("free")
    verifier = KeyVerifier(store)
    assert limited.startswith("rmkl_") and free.startswith("rmk_")
    assert verifier.is_valid(limited) and verifier.is_valid(free)
    assert not verifier.is_valid("rmk_" + limited.split("_", 1)[1])
    assert not verifier.is_valid("rmkl_" + free.split("_", 1)[1])

    # Envoy's full-match RE2 patterns, read the same way here: only the free key skips.
    def skips(header: str, value: str) -> bool:
        return re.fullmatch(UNLIMITED_KEY_VALUES[header], value) is not None

    assert skips("authorization", f"Bearer {free}") and skips("authorization", f"bearer {free}")
    assert skips("x-api-key", free)
    assert not skips("authorization", f"Bearer {limited}") and not skips("x-api-key", limited)
    assert not skips("authorization", f"Bearer  {free}")  # asked about, answered OK
