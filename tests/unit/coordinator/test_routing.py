"""The coordinator's routing decision order, branch by branch."""

from __future__ import annotations

import pytest

from ragmeshd.coordinator.routing import (
    ForcedBackendMissingError,
    Route,
    Side,
    check_forced,
    decide,
    needs_local_probe,
)

BOTH = {"local_configured": True, "remote_configured": True}


def route(
    forced: Side | None = None,
    confidence: float = 0.5,
    threshold: float = 0.7,
    *,
    local: bool = True,
    remote: bool = True,
    healthy: bool | None = None,
) -> Route:
    return decide(
        forced,
        confidence,
        threshold,
        local_configured=local,
        remote_configured=remote,
        local_healthy=healthy,
    )


@pytest.mark.parametrize("forced", [Side.LOCAL, Side.REMOTE])
def test_a_forced_side_wins_over_confidence_and_health(forced: Side) -> None:
    for confidence, healthy in [(0.99, True), (0.0, False), (0.5, None)]:
        chosen = route(forced, confidence, healthy=healthy)
        assert chosen.first is forced
        assert "forced" in chosen.reason
        assert chosen.fallback is (Side.REMOTE if forced is Side.LOCAL else Side.LOCAL)


def test_a_forced_side_has_no_fallback_when_the_other_is_absent() -> None:
    assert route(Side.LOCAL, remote=False).fallback is None
    assert route(Side.REMOTE, local=False).fallback is None


@pytest.mark.parametrize(
    ("forced", "local", "remote"), [(Side.LOCAL, False, True), (Side.REMOTE, True, False)]
)
def test_forcing_an_absent_backend_is_refused(forced: Side, local: bool, remote: bool) -> None:
    with pytest.raises(ForcedBackendMissingError, match=f"no {forced.value} backend"):
        route(forced, local=local, remote=remote)
    with pytest.raises(ForcedBackendMissingError, match=f"{forced.name}_URL"):
        check_forced(forced, local_configured=local, remote_configured=remote)


def test_forcing_none_returns_the_context_even_with_backends() -> None:
    chosen = route(Side.NONE, 0.99, healthy=True)
    assert chosen == Route(Side.NONE, "the request asked for the context only")
    check_forced(Side.NONE, local_configured=False, remote_configured=False)


def test_no_backend_configured_is_none() -> None:
    chosen = route(None, 0.99, local=False, remote=False)
    assert chosen.first is Side.NONE
    assert chosen.fallback is None
    assert "no language-model backend" in chosen.reason


def test_confident_and_healthy_goes_local_with_remote_as_fallback() -> None:
    chosen = route(None, 0.82, 0.7, healthy=True)
    assert chosen.first is Side.LOCAL
    assert chosen.fallback is Side.REMOTE
    assert chosen.reason == "confidence 0.82 >= threshold 0.70 and the local backend is healthy"


def test_the_threshold_is_reached_at_equality() -> None:
    assert route(None, 0.7, 0.7, healthy=True).first is Side.LOCAL


def test_low_confidence_goes_remote_with_local_as_fallback() -> None:
    chosen = route(None, 0.42, 0.7)
    assert chosen.first is Side.REMOTE
    assert chosen.fallback is Side.LOCAL
    assert chosen.reason == "confidence 0.42 < threshold 0.70"


def test_unhealthy_local_goes_remote_without_falling_back_to_local() -> None:
    chosen = route(None, 0.9, 0.7, healthy=False)
    assert chosen.first is Side.REMOTE
    assert chosen.fallback is None
    assert "health probe failed" in chosen.reason


def test_no_local_backend_goes_remote() -> None:
    chosen = route(None, 0.9, local=False)
    assert chosen.first is Side.REMOTE
    assert chosen.fallback is None
    assert "no local backend" in chosen.reason


def test_local_only_answers_even_when_not_confident_or_unhealthy() -> None:
    low = route(None, 0.1, remote=False)
    assert (low.first, low.fallback) == (Side.LOCAL, None)
    assert "only one configured" in low.reason
    sick = route(None, 0.9, remote=False, healthy=False)
    assert sick.first is Side.LOCAL
    assert "only one" in sick.reason


def test_the_local_probe_runs_only_when_it_can_change_the_decision() -> None:
    assert needs_local_probe(None, 0.8, 0.7, local_configured=True)
    assert not needs_local_probe(None, 0.6, 0.7, local_configured=True)
    assert not needs_local_probe(None, 0.8, 0.7, local_configured=False)
    assert not needs_local_probe(Side.LOCAL, 0.8, 0.7, local_configured=True)
