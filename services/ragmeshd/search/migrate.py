"""Versioned schema migrations for the pgvector backend.

Each migration is a pair of files in ragmeshd/search/migrations/: NNNN_name.up.sql and
NNNN_name.down.sql. Applied versions are recorded in `schema_migrations`; the runner is
ragmeshd/postgres/migrations.py.
"""

from __future__ import annotations

from pathlib import Path

from ragmeshd.postgres.migrations import MigrationError, MigrationSet

__all__ = ["MIGRATIONS", "MigrationError"]

MIGRATIONS = MigrationSet(
    directory=Path(__file__).parent / "migrations",
    table="schema_migrations",
    # pg_advisory_lock key: "ragmesh" as an integer, so other applications' keys don't collide.
    lock_key=int.from_bytes(b"ragmesh", "big"),
    logger_name="ragmesh.search.migrate",
)
