"""Versioned schema migrations of the coordinator's tables.

The same pattern as the search service's (services/search/migrate.py): NNNN_name.up.sql and
NNNN_name.down.sql pairs in services/coordinator/migrations/, each applied in its own
transaction together with its record, under an advisory lock. The coordinator shares the
search service's PostgreSQL database, so its versions are recorded in a table of their own,
`coordinator_schema_migrations`, and it takes a lock key of its own.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_log = logging.getLogger("ragmesh.coordinator.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATIONS_TABLE = "coordinator_schema_migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")
# pg_advisory_lock key: "rgmcoord" as an integer, distinct from the search service's.
_LOCK_KEY = int.from_bytes(b"rgmcoord", "big")


class MigrationError(Exception):
    """The migrations on disk are inconsistent, or a target version is unknown."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_sql: str
    down_sql: str


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
        missing = {"up", "down"} - set(found[version])
        if missing:
            raise MigrationError(f"migration {version:04d} has no {missing.pop()} file")
        files = found[version]
        migrations.append(Migration(version, names[version], files["up"], files["down"]))
    return migrations


async def _lock(conn: asyncpg.Connection) -> set[int]:
    """Take the advisory lock, make sure the record table exists; the applied versions."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    return {row["version"] for row in await conn.fetch(f"SELECT version FROM {MIGRATIONS_TABLE}")}


async def _unlock(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def upgrade(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply every pending migration, oldest first; returns the versions applied."""
    migrations = discover() if migrations is None else migrations
    done = []
    applied = await _lock(conn)
    try:
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.up_sql)
                await conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            _log.info(
                "migration applied",
                extra={"migration_version": migration.version, "migration": migration.name},
            )
            done.append(migration.version)
    finally:
        await _unlock(conn)
    return done


async def downgrade(
    conn: asyncpg.Connection, target: int = 0, migrations: list[Migration] | None = None
) -> list[int]:
    """Revert applied migrations above `target` (0 reverts all), newest first."""
    migrations = discover() if migrations is None else migrations
    if target and target not in {m.version for m in migrations}:
        raise MigrationError(f"there is no coordinator migration {target}")
    done = []
    applied = await _lock(conn)
    try:
        for migration in reversed(migrations):
            if migration.version not in applied or migration.version <= target:
                continue
            async with conn.transaction():
                await conn.execute(migration.down_sql)
                await conn.execute(
                    f"DELETE FROM {MIGRATIONS_TABLE} WHERE version = $1", migration.version
                )
            _log.info(
                "migration reverted",
                extra={"migration_version": migration.version, "migration": migration.name},
            )
            done.append(migration.version)
    finally:
        await _unlock(conn)
    return done
