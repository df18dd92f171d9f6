"""Versioned schema migrations for the pgvector backend.

Each migration is a pair of files in services/search/migrations/: NNNN_name.up.sql and
NNNN_name.down.sql. Applied versions are recorded in `schema_migrations`; each migration runs
in its own transaction together with its record, so a failed one leaves nothing behind. A
session-level advisory lock keeps two processes from migrating at once.
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_log = logging.getLogger("ragmesh.search.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")
# pg_advisory_lock key: "ragmesh" as an integer, so other applications' keys don't collide.
_LOCK_KEY = int.from_bytes(b"ragmesh", "big")


class MigrationError(Exception):
    """The migrations on disk are inconsistent, or a target version is unknown."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_sql: str
    down_sql: str


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime.datetime | None


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in `directory`, by version; each needs both an up and a down file."""
    found: dict[int, dict[str, str]] = {}
    names: dict[int, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name} is not named NNNN_name.up.sql or NNNN_name.down.sql")
        version, name, direction = int(match[1]), match[2], match[3]
        if names.setdefault(version, name) != name:
            raise MigrationError(f"version {version} has two names: {names[version]}, {name}")
        found.setdefault(version, {})[direction] = path.read_text()
    migrations = []
    for version in sorted(found):
        files = found[version]
        missing = {"up", "down"} - set(files)
        if missing:
            raise MigrationError(f"migration {version:04d} has no {missing.pop()} file")
        migrations.append(Migration(version, names[version], files["up"], files["down"]))
    return migrations


async def _ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


async def _applied(conn: asyncpg.Connection) -> dict[int, datetime.datetime]:
    rows = await conn.fetch("SELECT version, applied_at FROM schema_migrations")
    return {row["version"]: row["applied_at"] for row in rows}


async def status(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[MigrationStatus]:
    """Every known migration and when it was applied (None: pending)."""
    migrations = discover() if migrations is None else migrations
    await _ensure_table(conn)
    applied = await _applied(conn)
    return [MigrationStatus(m.version, m.name, applied.get(m.version)) for m in migrations]


async def upgrade(
    conn: asyncpg.Connection, target: int | None = None, migrations: list[Migration] | None = None
) -> list[int]:
    """Apply pending migrations up to `target` (default: all); returns the versions applied."""
    migrations = discover() if migrations is None else migrations
    _check_target(target, migrations)
    done = []
    async with _locked(conn):
        applied = await _applied(conn)
        for migration in migrations:
            if migration.version in applied or (target is not None and migration.version > target):
                continue
            async with conn.transaction():
                await conn.execute(migration.up_sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            _log.info(
                "migration applied",
                extra={"version": migration.version, "migration": migration.name},
            )
            done.append(migration.version)
    return done


async def downgrade(
    conn: asyncpg.Connection, target: int, migrations: list[Migration] | None = None
) -> list[int]:
    """Revert applied migrations above `target` (0 reverts all), newest first; returns them."""
    migrations = discover() if migrations is None else migrations
    if target != 0:
        _check_target(target, migrations)
    done = []
    async with _locked(conn):
        applied = await _applied(conn)
        for migration in reversed(migrations):
            if migration.version not in applied or migration.version <= target:
                continue
            async with conn.transaction():
                await conn.execute(migration.down_sql)
                await conn.execute(
                    "DELETE FROM schema_migrations WHERE version = $1", migration.version
                )
            _log.info(
                "migration reverted",
                extra={"version": migration.version, "migration": migration.name},
            )
            done.append(migration.version)
    return done


def _check_target(target: int | None, migrations: list[Migration]) -> None:
    if target is not None and target not in {m.version for m in migrations}:
        known = ", ".join(str(m.version) for m in migrations)
        raise MigrationError(f"there is no migration {target}; known versions: {known}")


class _locked:
    """Hold the migration advisory lock (and make sure the record table exists)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def __aenter__(self) -> None:
        await self._conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await _ensure_table(self._conn)

    async def __aexit__(self, *exc_info: object) -> None:
        await self._conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
