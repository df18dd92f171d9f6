"""Migrations are safe for rolling updates (docs/kubernetes.md, "Migrations during a rolling
update"): the previous release's queries still run against the newest schema.

During a roll the first new pod migrates the database while pods of the previous release keep
serving from it, so a migration may add but never drop, rename or retype what the previous
release reads or writes (expand now, contract a release later). This test replays, in order,
every statement and COPY the search store's pgvector backend sent for a full workload
(collections made and dropped, documents written, read, searched three ways, deleted), as
recorded from the previous release in release_queries/search.json, against a database
migrated to the newest version; any statement that fails is a migration that breaks the roll.

When a release is cut, record its queries as the next one's previous release:

    RAGMESH_RECORD_RELEASE_QUERIES=1 pytest tests/integration/search/test_rolling_schema.py
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from ragmeshd.postgres import pool as pg_pool
from ragmeshd.postgres.embedded import EmbeddedPostgres
from ragmeshd.search import migrate
from ragmeshd.search.backends.pg_connection import register_vector_codec
from ragmeshd.search.backends.pgvector import PgVectorBackend
from ragmeshd.search.records import (
    CollectionSpec,
    Equals,
    FusionParams,
    Passage,
    PreparedDocument,
)
from ragmeshd.settings import SearchSettings
from tests.integration.search.conftest import PostgresProcess, create_database

pytestmark = pytest.mark.integration

RECORDED = Path(__file__).parent / "release_queries" / "search.json"
RECORD = os.environ.get("RAGMESH_RECORD_RELEASE_QUERIES") == "1"


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"vector": [float(x) for x in value]}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    assert value is None or isinstance(value, str | int | float | bool), type(value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return np.array(value["vector"], np.float32)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


@contextmanager
def _recording(log: list[dict[str, Any]]) -> Iterator[None]:
    """Every query the backend's connections send, and every COPY, in order."""
    copy = asyncpg.Connection.copy_records_to_table

    async def copy_and_log(self: asyncpg.Connection, table: str, **kwargs: Any) -> Any:
        records = [list(r) for r in kwargs["records"]]
        done = await copy(self, table, **{**kwargs, "records": records})
        # asyncpg hands each finished query to its loggers with call_soon: the same here keeps
        # the COPY in its place among them.
        entry = {"copy": table, "columns": kwargs["columns"], "records": _encode(records)}
        asyncio.get_running_loop().call_soon(log.append, entry)
        return done

    asyncpg.Connection.copy_records_to_table = copy_and_log
    try:
        yield
    finally:
        asyncpg.Connection.copy_records_to_table = copy


async def _workload(backend: PgVectorBackend) -> None:
    """What a search pod asks of its store, one call of each kind."""
    await backend.create_collection(CollectionSpec("release", 3, "test", 16, 64))
    documents = [
        PreparedDocument(
            f"d{i}",
            "cells and proteins in recent studies",
            {"kind": "paper", "year": float(2020 + i)},
            [Passage(0, "cells and proteins", np.array([1.0, i, 0.5], np.float32))],
        )
        for i in range(3)
    ]
    await backend.upsert("release", documents)
    await backend.upsert("release", documents[:1])  # a replacement
    await backend.list_collections()
    await backend.get_collection("release")
    await backend.get_document("release", "d1")
    await backend.count_documents("release", (Equals("kind", "paper"),))
    await backend.list_documents("release", "", "", 10)
    vector = np.array([1.0, 1.0, 0.5], np.float32)
    await backend.dense_search("release", vector, 5, ())
    await backend.keyword_search("release", "proteins", 5, (Equals("kind", "paper"),))
    await backend.hybrid_search("release", vector, "cells", 5, (), FusionParams(60, 1.0, 1.0))
    await backend.delete_documents("release", ["d0"])
    await backend.delete_collection("release")


async def _record(dsn: str) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = []

    def logged(query: Any) -> None:
        log.append({"sql": query.query, "args": _encode(list(query.args or ()))})

    backend = PgVectorBackend(dsn, SearchSettings(pg_pool_min_size=1, pg_pool_max_size=1))
    await backend.start()
    try:
        for conn in list(pg_pool._OPEN_CONNECTIONS):
            conn.add_query_logger(logged)
        with _recording(log):
            await _workload(backend)
    finally:
        await backend.close()
    return log


async def test_the_previous_releases_queries_run_on_the_newest_schema(
    postgres_server: PostgresProcess,
) -> None:
    create_database(postgres_server.dsn, "rolling")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="rolling")
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.MIGRATIONS.upgrade(conn)
    finally:
        await conn.close()
    if RECORD:
        queries = await _record(dsn)
        versions = [m.version for m in migrate.MIGRATIONS.discover()]
        RECORDED.write_text(
            json.dumps({"schema_version": versions[-1], "queries": queries}, indent=1) + "\n"
        )
        pytest.skip(f"recorded {len(queries)} queries into {RECORDED}")
    recorded = json.loads(RECORDED.read_text())
    assert recorded["queries"], "nothing recorded"
    conn = await asyncpg.connect(dsn)
    try:
        await register_vector_codec(conn)
        for number, entry in enumerate(recorded["queries"]):
            try:
                if "copy" in entry:
                    await conn.copy_records_to_table(
                        entry["copy"],
                        columns=entry["columns"],
                        records=[tuple(_decode(r)) for r in entry["records"]],
                    )
                elif entry["args"]:
                    await conn.fetch(entry["sql"], *_decode(entry["args"]))
                else:
                    await conn.execute(entry["sql"])
            except asyncpg.PostgresError as error:
                pytest.fail(
                    f"query {number} of the previous release (schema"
                    f" {recorded['schema_version']}) fails on the newest schema: {error}\n"
                    f"{entry.get('sql') or entry['copy']}"
                )
    finally:
        await conn.close()
