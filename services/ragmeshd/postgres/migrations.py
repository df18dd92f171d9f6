"""Versioned schema migrations on PostgreSQL, shared by the services that keep tables there.

A `MigrationSet` names a directory of NNNN_name.up.sql / NNNN_name.down.sql pairs, the
table its applied versions are recorded in, and the advisory lock key that keeps two
processes from migrating it at once. Each migration runs in its own transaction together
with its record, so a failed one leaves nothing behind.
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")


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


@dataclass(frozen=True)
class MigrationSet:
    """One service's migrations: where they are, where they are recorded, which lock."""

    directory: Path
    # The record table; an identifier of our own, never user input.
    table: str
    # pg_advisory_lock key, distinct per set.
    lock_key: int
    logger_name: str
    # How error messages call a migration of this set ("coordinator migration").
    label: str = "migration"

    def discover(self) -> list[Migration]:
        """The migrations in the directory, by version; each needs an up and a down file."""
        found: dict[int, dict[str, str]] = {}
        names: dict[int, str] = {}
        for path in sorted(self.directory.glob("*.sql")):
            match = _FILE.match(path.name)
            if match is None:
                raise MigrationError(
                    f"{path.name} is not named NNNN_name.up.sql or NNNN_name.down.sql"
                )
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

    async def status(
        self, conn: asyncpg.Connection, migrations: list[Migration] | None = None
    ) -> list[MigrationStatus]:
        """Every known migration and when it was applied (None: pending)."""
        migrations = self.discover() if migrations is None else migrations
        await self._ensure_table(conn)
        applied = await self._applied(conn)
        return [MigrationStatus(m.version, m.name, applied.get(m.version)) for m in migrations]

    async def upgrade(
        self,
        conn: asyncpg.Connection,
        target: int | None = None,
        migrations: list[Migration] | None = None,
    ) -> list[int]:
        """Apply pending migrations up to `target` (default: all), oldest first; returns the
        versions applied."""
        migrations = self.discover() if migrations is None else migrations
        self._check_target(target, migrations)
        log = logging.getLogger(self.logger_name)
        done = []
        async with _Locked(self, conn):
            applied = await self._applied(conn)
            for migration in migrations:
                if migration.version in applied or (
                    target is not None and migration.version > target
                ):
                    continue
                async with conn.transaction():
                    await conn.execute(migration.up_sql)
                    await conn.execute(
                        f"INSERT INTO {self.table} (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                log.info(
                    "migration applied",
                    extra={"migration_version": migration.version, "migration": migration.name},
                )
                done.append(migration.version)
        return done

    async def downgrade(
        self, conn: asyncpg.Connection, target: int = 0, migrations: list[Migration] | None = None
    ) -> list[int]:
        """Revert applied migrations above `target` (0 reverts all), newest first; returns
        them."""
        migrations = self.discover() if migrations is None else migrations
        if target != 0:
            self._check_target(target, migrations)
        log = logging.getLogger(self.logger_name)
        done = []
        async with _Locked(self, conn):
            applied = await self._applied(conn)
            for migration in reversed(migrations):
                if migration.version not in applied or migration.version <= target:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.down_sql)
                    await conn.execute(
                        f"DELETE FROM {self.table} WHERE version = $1", migration.version
                    )
                log.info(
                    "migration reverted",
                    extra={"migration_version": migration.version, "migration": migration.name},
                )
                done.append(migration.version)
        return done

    def _check_target(self, target: int | None, migrations: list[Migration]) -> None:
        if target is not None and target not in {m.version for m in migrations}:
            known = ", ".join(str(m.version) for m in migrations)
            raise MigrationError(f"there is no {self.label} {target}; known versions: {known}")

    async def _ensure_table(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )

    async def _applied(self, conn: asyncpg.Connection) -> dict[int, datetime.datetime]:
        rows = await conn.fetch(f"SELECT version, applied_at FROM {self.table}")
        return {row["version"]: row["applied_at"] for row in rows}


class _Locked:
    """Hold a set's advisory lock (and make sure its record table exists)."""

    def __init__(self, migrations: MigrationSet, conn: asyncpg.Connection) -> None:
        self._migrations = migrations
        self._conn = conn

    async def __aenter__(self) -> None:
        await self._conn.execute("SELECT pg_advisory_lock($1)", self._migrations.lock_key)
        await self._migrations._ensure_table(self._conn)

    async def __aexit__(self, *exc_info: object) -> None:
        await self._conn.execute("SELECT pg_advisory_unlock($1)", self._migrations.lock_key)
