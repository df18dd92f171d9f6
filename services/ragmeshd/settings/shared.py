"""Settings groups more than one service section holds: a PostgreSQL database (search's
store, the coordinator's interactions) and a circuit breaker (search -> embeddings,
coordinator -> search and its language models).

Each section nests them (`search.pg.dsn`, RAGMESH_SEARCH__PG__DSN) with its own defaults, and
the flat names they had before (`search.pg_dsn`, RAGMESH_SEARCH__PG_DSN,
`coordinator.search_breaker_failures`) keep working: `nest` moves them in before validation.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from ragmeshd import defaults
from ragmeshd.settings.core import Section


class PostgresSettings(Section):
    """A service's database: where it is, its pool and its start-up and health checks."""

    # An external PostgreSQL as a libpq URI; empty means the embedded server that
    # `ragmesh serve postgres` runs under STATE_DIR/postgres.
    dsn: str = ""
    pool_min_size: int = Field(defaults.PG_POOL_MIN_SIZE, ge=0)
    pool_max_size: int = Field(defaults.PG_POOL_MAX_SIZE, ge=1)
    statement_timeout_ms: int = Field(defaults.PG_STATEMENT_TIMEOUT_MS, ge=0)
    connect_attempts: int = Field(defaults.PG_CONNECT_ATTEMPTS, ge=1)
    connect_backoff_base_s: float = Field(defaults.PG_CONNECT_BACKOFF_BASE_S, ge=0)
    health_interval_s: float = Field(defaults.PG_HEALTH_INTERVAL_S, gt=0)
    health_timeout_s: float = Field(defaults.PG_HEALTH_TIMEOUT_S, gt=0)
    # `dsn` is a PgBouncer in transaction mode (docs/kubernetes.md, "Scale-out"): settings
    # are set per transaction, asyncpg's statement cache is off (postgres/pool.py).
    transaction_pooling: bool = False
    # Where migrations connect when not to `dsn`: the database itself, past a pooler (they
    # hold a session advisory lock). Empty: `dsn`.
    migrate_dsn: str = ""

    @model_validator(mode="after")
    def _pool_sizes(self) -> PostgresSettings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        return self


class BreakerSettings(Section):
    """A circuit breaker (runtime/resilience.py): it opens after `failures` consecutive
    failures and lets one probe call through after `recovery_s`."""

    failures: int = Field(ge=1)
    recovery_s: float = Field(gt=0)


def coordinator_postgres() -> PostgresSettings:
    """The coordinator's database defaults: a smaller pool than search's."""
    return PostgresSettings(
        pool_min_size=defaults.COORDINATOR_PG_POOL_MIN_SIZE,
        pool_max_size=defaults.COORDINATOR_PG_POOL_MAX_SIZE,
        statement_timeout_ms=defaults.COORDINATOR_PG_STATEMENT_TIMEOUT_MS,
        connect_attempts=defaults.COORDINATOR_PG_CONNECT_ATTEMPTS,
        connect_backoff_base_s=defaults.COORDINATOR_PG_CONNECT_BACKOFF_BASE_S,
        health_interval_s=defaults.COORDINATOR_PG_HEALTH_INTERVAL_S,
        health_timeout_s=defaults.COORDINATOR_PG_HEALTH_TIMEOUT_S,
    )


def nest(data: Any, field: str, flat_prefix: str, default: BaseModel) -> Any:
    """Before validation of a section: gather `field`'s values from its nested form and the
    flat names `<flat_prefix><name>` into one mapping over `default`'s values, so that
    setting one value keeps this section's defaults for the others."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    given = data.get(field)
    values = default.model_dump()
    if isinstance(given, BaseModel):
        values.update(given.model_dump())
    elif isinstance(given, dict):
        values.update(given)
    for name in type(default).model_fields:
        if f"{flat_prefix}{name}" in data:
            values[name] = data.pop(f"{flat_prefix}{name}")
    data[field] = values
    return data
