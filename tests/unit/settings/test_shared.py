"""Nested PostgresSettings and BreakerSettings (settings/shared.py): the flat names users set
before keep working, and setting one value keeps the section's own defaults for the rest."""

from __future__ import annotations

import pytest

from ragmeshd import defaults
from ragmeshd.settings import CoordinatorSettings, SearchSettings, load_settings


def test_flat_names_of_before_fill_the_nested_groups() -> None:
    search = SearchSettings(pg_dsn="postgresql://db/x", embed_breaker_failures=9)
    assert search.pg.dsn == "postgresql://db/x"
    assert search.embed_breaker.failures == 9
    assert search.embed_breaker.recovery_s == defaults.EMBED_BREAKER_RECOVERY_S
    coordinator = CoordinatorSettings(breaker_recovery_s=7, search_breaker_failures=2)
    assert coordinator.local_breaker.recovery_s == coordinator.remote_breaker.recovery_s == 7
    assert coordinator.search_breaker.failures == 2


def test_one_nested_value_keeps_the_sections_defaults() -> None:
    coordinator = CoordinatorSettings(pg={"pool_max_size": 3})
    assert coordinator.pg.pool_max_size == 3
    assert coordinator.pg.statement_timeout_ms == defaults.COORDINATOR_PG_STATEMENT_TIMEOUT_MS
    assert SearchSettings().pg.statement_timeout_ms == defaults.PG_STATEMENT_TIMEOUT_MS


def test_environment_names_old_and_new(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGMESH_SEARCH__PG_DSN", "postgresql://old/x")
    monkeypatch.setenv("RAGMESH_COORDINATOR__PG__DSN", "postgresql://new/x")
    monkeypatch.setenv("RAGMESH_SEARCH__EMBED_BREAKER__FAILURES", "4")
    settings = load_settings()
    assert settings.search.pg.dsn == "postgresql://old/x"
    assert settings.coordinator.pg.dsn == "postgresql://new/x"
    assert settings.search.embed_breaker.failures == 4


def test_pool_sizes_checked() -> None:
    with pytest.raises(ValueError, match="pool_min_size must not exceed pool_max_size"):
        SearchSettings(pg_pool_min_size=5, pg_pool_max_size=2)
