"""The coordinator's settings: defaults, validation, the live confidence threshold and
request validation messages."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from ragmeshd.coordinator.threshold import LiveThreshold
from ragmeshd.coordinator.validation import (
    InvalidRequestError,
    check_collections,
    check_export_ratings,
    check_query,
    check_range,
    check_rating,
    parse_interaction_id,
)
from ragmeshd.settings import CoordinatorSettings, load_settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_defaults_match_the_issue() -> None:
    s = CoordinatorSettings()
    assert s.confidence_threshold == 0.7
    assert (s.local_breaker.failures, s.remote_breaker.failures) == (3, 5)
    assert s.local_url == s.remote_url == ""
    assert s.interactions_collection == "interactions"


@pytest.mark.parametrize(
    "bad",
    [
        {"confidence_threshold": 1.5},
        {"default_top_k": 60},
        {"default_context_tokens": 9000},
        {"interactions_collection": "Bad Name"},
        {"unknown_key": 1},
    ],
)
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CoordinatorSettings(**bad)  # type: ignore[arg-type]


def write(path: Path, threshold: float, bump_ns: int = 0) -> None:
    path.write_text(f"[coordinator]\nconfidence_threshold = {threshold}\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump_ns))


def test_the_threshold_is_re_read_when_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "ragmesh.toml"
    write(config, 0.7)
    monkeypatch.setenv("RAGMESH_CONFIG_FILE", str(config))
    clock = FakeClock()
    live = LiveThreshold(
        0.7,
        config_file=config,
        load=lambda: load_settings().coordinator.confidence_threshold,
        check_interval_s=1.0,
        clock=clock,
    )
    write(config, 0.4, bump_ns=1_000_000)
    assert live.current() == 0.7  # not checked again within the interval
    clock.now = 1.5
    assert live.current() == 0.4

    # A broken file keeps the last good value.
    config.write_text("[coordinator]\nconfidence_threshold = 7\n")
    clock.now = 3
    assert live.current() == 0.4

    # An environment variable still outranks the file, as at start-up.
    monkeypatch.setenv("RAGMESH_COORDINATOR__CONFIDENCE_THRESHOLD", "0.9")
    write(config, 0.1, bump_ns=2_000_000)
    clock.now = 5
    assert live.current() == 0.9


def test_without_a_config_file_the_threshold_is_fixed() -> None:
    live = LiveThreshold(0.6, config_file=None, load=lambda: 0.1, check_interval_s=0.0)
    assert live.current() == 0.6


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: check_query("   ", s), "query is empty"),
        (lambda s: check_query("x" * 2001, s), "2001 characters; the limit is 2000"),
        (lambda s: check_collections(["a"] * 17, s), "17 collections; the limit is 16"),
        (lambda s: check_collections(["Not OK"], s), r"collections\[0\] 'Not OK' is not"),
        (lambda s: check_collections(["a", "a"], s), "same collection twice"),
        (
            lambda s: check_range(51, "top_k", default=5, low=1, high=50),
            "top_k is 51; it must be 1 to 50",
        ),
        (lambda s: check_range(-1, "max_context_tokens", default=1, low=1, high=8), "-1"),
        (lambda s: check_rating(2), r"rating is 2; it must be -1, 0 or \+1"),
        (lambda s: check_export_ratings([1, 1]), "same rating twice"),
        (lambda s: parse_interaction_id("nope"), "not an interaction id"),
        (lambda s: parse_interaction_id(""), "interaction_id is empty"),
    ],
)
def test_bad_requests_say_what_is_wrong(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequestError, match=message):
        call(CoordinatorSettings())


def test_good_requests_pass() -> None:
    s = CoordinatorSettings()
    assert check_range(0, "top_k", default=5, low=1, high=50) == 5
    assert check_collections(["docs", "interactions"], s) == ["docs", "interactions"]
    uid = uuid.uuid4()
    assert parse_interaction_id(str(uid)) == uid
