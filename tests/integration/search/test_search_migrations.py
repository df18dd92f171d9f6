"""Every migration rolled forward and back on a real PostgreSQL, with data in place, and the
`ragmesh db` command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from ragmeshd.postgres.embedded import EmbeddedPostgres
from ragmeshd.search import migrate
from ragmeshd.search.backends.pgvector import PgVectorBackend
from ragmeshd.search.keywords import passage_terms
from ragmeshd.search.records import CollectionSpec, Passage, PreparedDocument
from ragmeshd.settings import SearchSettings
from tests.helpers import ragmesh_command
from tests.integration.search.conftest import PostgresProcess, create_database

pytestmark = pytest.mark.integration


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row["tablename"] for row in rows}


async def columns(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
    )
    return {row["column_name"] for row in rows}


async def test_every_migration_goes_forward_and_back(postgres_server: PostgresProcess) -> None:
    create_database(postgres_server.dsn, "migrations")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="migrations")
    migrations = migrate.MIGRATIONS.discover()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions) and len(versions) >= 2

    conn = await asyncpg.connect(dsn)
    try:
        assert await migrate.MIGRATIONS.upgrade(conn) == versions
        assert await migrate.MIGRATIONS.upgrade(conn) == []  # idempotent
        assert all(entry.applied_at for entry in await migrate.MIGRATIONS.status(conn))

        # Data in place: a collection with two documents, through the backend itself.
        backend = PgVectorBackend(dsn, SearchSettings(pg_pool_min_size=1, pg_pool_max_size=2))
        await backend.start()
        try:
            await backend.create_collection(CollectionSpec("kept", 3, "test", 16, 64))
            await backend.upsert(
                "kept",
                [
                    PreparedDocument(
                        f"d{i}",
                        "cells and proteins",
                        {"i": float(i)},
                        [Passage(0, "cells and proteins", np.array([1.0, i, 0.5], np.float32))],
                    )
                    for i in range(2)
                ],
            )
        finally:
            await backend.close()
        before = await conn.fetchrow(
            "SELECT document_count, passage_count, passage_terms FROM search_collections"
        )
        assert (before["document_count"], before["passage_count"]) == (2, 2)

        # Step back one migration at a time, then forward again: each down undoes its up.
        for migration in reversed(migrations):
            target = migration.version - 1
            assert await migrate.MIGRATIONS.downgrade(conn, target) == [migration.version]
            applied = {e.version for e in await migrate.MIGRATIONS.status(conn) if e.applied_at}
            assert applied == {v for v in versions if v <= target}
        assert await tables(conn) == {"schema_migrations"}

        assert await migrate.MIGRATIONS.upgrade(conn, target=1) == [1]
        assert "document_count" not in await columns(conn, "search_collections")
        assert await migrate.MIGRATIONS.upgrade(conn, target=2) == [2]
        assert {"document_count", "passage_count", "passage_terms"} <= await columns(
            conn, "search_collections"
        )

        # 0002's backfill: counters rebuilt from the collection's tables after a round trip.
        await conn.execute(
            "INSERT INTO search_collections (name, dimensions, embedding_model, hnsw_m,"
            " hnsw_ef_construction, text_search_config) VALUES ('x', 3, 't', 16, 64, 'english')"
        )
        collection_id = await conn.fetchval("SELECT id FROM search_collections WHERE name = 'x'")
        texts = ["The cells were running, and studies of cells", "four", "the of and"]
        await conn.execute(
            f"CREATE TABLE search_documents_{collection_id} (id text PRIMARY KEY);"
            f" CREATE TABLE search_passages_{collection_id} (document_id text,"
            "  passage_index integer, text text, terms tsvector GENERATED ALWAYS AS"
            "  (to_tsvector('english'::regconfig, text)) STORED);"
            f" INSERT INTO search_documents_{collection_id} VALUES ('a'), ('b'), ('c');"
        )
        await conn.executemany(
            f"INSERT INTO search_passages_{collection_id} VALUES ($1, 0, $2)",
            [("a", texts[0]), ("b", texts[1]), ("c", texts[2])],
        )
        await migrate.MIGRATIONS.downgrade(conn, 1)
        await migrate.MIGRATIONS.upgrade(conn, target=2)
        row = await conn.fetchrow(
            "SELECT document_count, passage_count, passage_terms FROM search_collections"
            " WHERE name = 'x'"
        )
        assert tuple(row) == (3, 3, 4)  # distinct lexemes: cell run studi | four | -

        # 0003: the passages' terms become the service tokenizer's, with their statistics.
        assert await migrate.MIGRATIONS.upgrade(conn) == versions[2:]
        ids = dict(await conn.fetch(f"SELECT id, term FROM search_terms_{collection_id}"))
        rows = await conn.fetch(
            f"SELECT terms, frequencies, length FROM search_passages_{collection_id}"
            " ORDER BY document_id"
        )
        for text, stored in zip(texts, rows, strict=True):
            expected = passage_terms(text)
            assert stored["terms"] == sorted(stored["terms"]), text
            assert {
                ids[i]: n for i, n in zip(stored["terms"], stored["frequencies"], strict=True)
            } == expected.frequencies, text
            assert stored["length"] == expected.length, text
        frequencies = dict(
            await conn.fetch(f"SELECT term, passages FROM search_terms_{collection_id}")
        )
        assert frequencies == {"cell": 1, "run": 1, "studi": 1, "four": 1}
        assert await conn.fetchval("SELECT passage_terms FROM search_collections") == 5
        await migrate.MIGRATIONS.downgrade(conn, 2)
        assert "text_search_config" in await columns(conn, "search_collections")
        assert await conn.fetchval("SELECT passage_terms FROM search_collections") == 4
        assert await migrate.MIGRATIONS.upgrade(conn) == versions[2:]
        # 0005: the term index has no pending list.
        options = await conn.fetchval(
            "SELECT reloptions FROM pg_class WHERE relname = $1",
            f"search_passages_{collection_id}_terms",
        )
        assert options == ["fastupdate=off"]
        # 0006: the collection has a write version and an (empty) change log.
        assert await conn.fetchval("SELECT write_version FROM search_collections") == 0
        assert await conn.fetchval(f"SELECT count(*) FROM search_changes_{collection_id}") == 0

        with pytest.raises(migrate.MigrationError, match="there is no migration 99"):
            await migrate.MIGRATIONS.upgrade(conn, target=99)
    finally:
        await conn.close()


def test_db_command(postgres_server: PostgresProcess, tmp_path: Path) -> None:
    """`ragmesh db` migrates both schemas (search and coordinator), the DSN from a file,
    text or one JSON document on stdout, a usage error on stderr."""
    create_database(postgres_server.dsn, "cli")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(EmbeddedPostgres(postgres_server.state_dir).dsn(database="cli"))

    def db(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ragmesh_command("db", *args, "--pg-dsn-file", str(dsn_file)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == code, result.stdout + result.stderr
        return result

    status = json.loads(db("status", "--json").stdout)["schemas"]
    assert set(status) == {"search", "coordinator"}
    assert all(m["applied_at"] is None for m in status["search"]["migrations"])
    out = db("upgrade").stdout
    assert "search schema:\n  applied: 1, 2, 3, 4, 5, 6" in out
    assert "coordinator schema:\n  applied: 1, 2" in out
    refused = db("downgrade", code=2)
    assert refused.stdout == "" and "--schema" in refused.stderr
    assert "reverted: 6" in db("downgrade", "--schema", "search").stdout
    out = db("downgrade", "--schema", "search", "--to", "0").stdout
    assert "reverted: 5, 4, 3, 2, 1" in out and out.count("pending") == 6
    assert "applied: 1" in db("upgrade", "--schema", "search", "--to", "1").stdout
    coordinator = json.loads(db("status", "--schema", "coordinator", "--json").stdout)
    assert coordinator["schemas"]["coordinator"]["migrations"][0]["applied_at"]
