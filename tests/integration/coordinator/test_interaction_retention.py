"""`ragmesh db purge-interactions` (the retention of users' questions) and `ragmesh db
backup|restore` on a real embedded PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest

from ragmeshd.coordinator import migrate
from ragmeshd.postgres.embedded import EmbeddedPostgres
from ragmeshd.search import migrate as search_migrate
from tests.helpers import ragmesh_command

pytestmark = pytest.mark.integration

AGES_DAYS = [0, 1, 29, 31, 45, 400]


async def fresh_database(state_dir: Path, name: str) -> str:
    """A database with both schemas and one interaction stored `age` days ago per AGES_DAYS."""
    admin = await asyncpg.connect(EmbeddedPostgres(state_dir).dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = EmbeddedPostgres(state_dir).dsn(name)
    conn = await asyncpg.connect(dsn)
    try:
        await search_migrate.MIGRATIONS.upgrade(conn)
        await migrate.MIGRATIONS.upgrade(conn)
        for age in AGES_DAYS:
            await conn.execute(
                "INSERT INTO coordinator_interactions (id, created_at, query, collections,"
                " decision, reason, answered_by, model, fallback, fallback_reason, confidence,"
                " context, answer, latency_ms, timings) VALUES ($1, now() - make_interval("
                "days => $2), $3, '{}', 'none', '', 'none', '', false, '', 0, '[]', '', 0, '{}')",
                uuid.uuid4(),
                age,
                f"question asked {age} days ago",
            )
    finally:
        await conn.close()
    return dsn


async def queries(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT query FROM coordinator_interactions ORDER BY created_at")
    finally:
        await conn.close()
    return [row["query"] for row in rows]


def db(dsn_file: Path, *args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
    ran = subprocess.run(
        ragmesh_command("db", *args, "--pg-dsn-file", str(dsn_file)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert ran.returncode == code, ran.stdout + ran.stderr
    return ran.stdout if code == 0 else ran.stderr


def asked(days: list[int]) -> list[str]:
    return [f"question asked {age} days ago" for age in sorted(days, reverse=True)]


async def test_purge_deletes_only_interactions_past_the_age(
    coordinator_pg_state: Path, tmp_path: Path
) -> None:
    dsn = await fresh_database(coordinator_pg_state, "retention")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(dsn)

    assert "--older-than" in db(dsn_file, "purge-interactions", code=2)
    dry = json.loads(
        db(dsn_file, "purge-interactions", "--older-than", "30d", "--dry-run", "--json")
    )
    assert dry == {"older_than_s": 30 * 86_400.0, "dry_run": True, "interactions": 3}
    assert await queries(dsn) == asked(AGES_DAYS)

    assert db(dsn_file, "purge-interactions", "--older-than", "30d") == (
        "deleted 3 interactions older than 30 days\n"
    )
    assert await queries(dsn) == asked([0, 1, 29])

    # The setting is the default age: RAGMESH_COORDINATOR__INTERACTIONS_RETENTION_DAYS.
    env = {**os.environ, "RAGMESH_COORDINATOR__INTERACTIONS_RETENTION_DAYS": "2"}
    out = json.loads(db(dsn_file, "purge-interactions", "--json", env=env))
    assert out["interactions"] == 1 and out["older_than_s"] == 2 * 86_400.0
    assert await queries(dsn) == asked([0, 1])


async def test_backup_and_restore_bring_both_schemas_back(
    coordinator_pg_state: Path, tmp_path: Path
) -> None:
    dsn = await fresh_database(coordinator_pg_state, "backup")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(dsn)
    backup = tmp_path / "mesh.dump"

    written = json.loads(db(dsn_file, "backup", str(backup), "--json"))
    assert written["bytes"] == backup.stat().st_size > 0
    db(dsn_file, "purge-interactions", "--older-than", "1ms")
    assert await queries(dsn) == []

    assert db(dsn_file, "restore", str(backup)).startswith(f"restored {backup}")
    assert await queries(dsn) == asked(AGES_DAYS)
    status = json.loads(db(dsn_file, "status", "--json"))["schemas"]
    assert all(m["applied_at"] for schema in status.values() for m in schema["migrations"])
    assert "no such backup file" in db(dsn_file, "restore", str(tmp_path / "missing"), code=2)
