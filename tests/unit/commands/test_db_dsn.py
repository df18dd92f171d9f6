"""Which database `ragmesh db` connects to: the services' DSN, or, behind a transaction-pooling
PgBouncer, the migration DSN (the database itself), where a session holds its lock."""

from __future__ import annotations

from pathlib import Path

from ragmeshd.commands.db import _dsn
from ragmeshd.settings import Settings

POOLER = "postgresql://pooler:5432/ragmesh"
DIRECT = "postgresql://ragmesh:secret@db-rw:5432/ragmesh"


def test_without_a_migration_dsn_the_services_dsn(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, search={"pg": {"dsn": DIRECT}})
    assert _dsn(settings, "search") == DIRECT
    assert _dsn(settings, "coordinator") == DIRECT


def test_behind_a_pooler_the_database_itself(tmp_path: Path) -> None:
    pg = {"dsn": POOLER, "migrate_dsn": DIRECT, "transaction_pooling": True}
    settings = Settings(state_dir=tmp_path, search={"pg": pg})
    assert _dsn(settings, "search") == DIRECT
    # The coordinator without a DSN of its own shares search's database, pooler and all.
    assert _dsn(settings, "coordinator") == DIRECT
    own = Settings(state_dir=tmp_path, search={"pg": pg}, coordinator={"pg": {"dsn": POOLER}})
    assert _dsn(own, "coordinator") == POOLER
