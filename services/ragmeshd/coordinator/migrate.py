"""Versioned schema migrations of the coordinator's tables.

NNNN_name.up.sql and NNNN_name.down.sql pairs in ragmeshd/coordinator/migrations/, run by
ragmeshd/postgres/migrations.py like the search service's. The coordinator shares the
search service's PostgreSQL database, so its versions are recorded in a table of their own,
`coordinator_schema_migrations`, and it takes a lock key of its own.
"""

from __future__ import annotations

from pathlib import Path

from ragmeshd.postgres.migrations import MigrationError, MigrationSet

__all__ = ["MIGRATIONS", "MigrationError"]

MIGRATIONS = MigrationSet(
    directory=Path(__file__).parent / "migrations",
    table="coordinator_schema_migrations",
    # pg_advisory_lock key: "rgmcoord" as an integer, distinct from the search service's.
    lock_key=int.from_bytes(b"rgmcoord", "big"),
    logger_name="ragmesh.coordinator.migrate",
    label="coordinator migration",
)
