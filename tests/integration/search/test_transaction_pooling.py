"""Search behind PgBouncer in transaction mode (pg.transaction_pooling, as the Kubernetes
manifests' CloudNativePG Pooler runs it): the session settings hold inside every transaction,
asyncpg prepares nothing that a later transaction could miss, migrations go to the database
itself, and a search service's whole work runs through a real PgBouncer whose two server
connections its pool of eight shares.

PgBouncer is Debian's package (`make test-tools` installs it); it refuses to run as root, so
as root it runs as the embedded server's user."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import numpy as np
import pytest

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.coordinator.records import ExportFilter
from ragmeshd.coordinator.server import open_store
from ragmeshd.postgres.embedded import SERVICE_USER_AS_ROOT, EmbeddedPostgres
from ragmeshd.postgres.pool import create_pool
from ragmeshd.postgres.transaction_pool import isolated_transaction
from ragmeshd.search.backends.pgvector import PgVectorBackend
from ragmeshd.search.records import (
    CollectionSpec,
    FusionMethod,
    FusionParams,
    Passage,
    PreparedDocument,
)
from ragmeshd.search.result_cache import ResultCache
from ragmeshd.settings import SearchSettings, Settings
from tests.helpers import ServerProcess, eventually, free_port, run_coroutine, running_process
from tests.integration.search.conftest import PostgresProcess, create_database

pytestmark = pytest.mark.integration

STATEMENT_TIMEOUT_MS = 1500
EF_SEARCH = 77
# PgBouncer's server connections per database and user: fewer than the search pool's
# connections, so transactions of different pool connections share server connections.
SERVER_CONNECTIONS = 2
POOL_CONNECTIONS = 8


def _settings(**pg: object) -> SearchSettings:
    return SearchSettings(
        hnsw_ef_search=EF_SEARCH,
        pg={
            "transaction_pooling": True,
            "statement_timeout_ms": STATEMENT_TIMEOUT_MS,
            "pool_min_size": 1,
            "pool_max_size": POOL_CONNECTIONS,
            **pg,
        },
    )


async def _settings_in_transaction(conn: asyncpg.Connection) -> tuple[str, str, str]:
    return (
        await conn.fetchval("SHOW statement_timeout"),
        await conn.fetchval("SHOW hnsw.ef_search"),
        await conn.fetchval("SHOW hnsw.iterative_scan"),
    )


IN_EFFECT = (f"{STATEMENT_TIMEOUT_MS}ms", str(EF_SEARCH), "relaxed_order")


async def test_settings_hold_per_transaction_on_the_embedded_server(
    postgres_server: PostgresProcess,
) -> None:
    create_database(postgres_server.dsn, "per_transaction")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="per_transaction")
    backend = PgVectorBackend(dsn, _settings())
    await backend.start()
    try:
        async with backend.pool.acquire() as conn:
            assert await _settings_in_transaction(conn) == IN_EFFECT
            # Set in this transaction, not for the session: the session's value is the
            # server's default (a pooler's next client would not inherit it).
            session_value = await conn.fetchval(
                "SELECT reset_val FROM pg_settings WHERE name = 'statement_timeout'"
            )
            assert session_value == "0"
            async with isolated_transaction(conn, isolation="repeatable_read", readonly=True):
                assert await conn.fetchval("SHOW transaction_isolation") == "repeatable read"
                assert await _settings_in_transaction(conn) == IN_EFFECT
            assert await conn.fetchval("SHOW transaction_isolation") == "read committed"
            assert await _settings_in_transaction(conn) == IN_EFFECT
        # The statement timeout is in force, not only shown.
        with pytest.raises(asyncpg.QueryCanceledError):
            await backend.pool.fetchval("SELECT pg_sleep(60)")
        # The statement cache is off: nothing prepared outlives a transaction.
        async with backend.pool.acquire() as conn:
            await conn.fetchval("SELECT count(*) FROM search_collections")
            assert await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
    finally:
        await backend.close()


async def test_a_raising_caller_rolls_back_and_a_returning_one_commits(
    postgres_server: PostgresProcess,
) -> None:
    create_database(postgres_server.dsn, "commit_rollback")
    dsn = EmbeddedPostgres(postgres_server.state_dir).dsn(database="commit_rollback")
    pool = await create_pool(
        dsn,
        application_name="pooling-test",
        min_size=1,
        max_size=1,
        statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        transaction_pooling=True,
    )
    try:
        await pool.execute("CREATE TABLE written (n int)")
        await pool.execute("INSERT INTO written VALUES (1)")
        with pytest.raises(RuntimeError):
            async with pool.acquire() as conn:
                await conn.execute("INSERT INTO written VALUES (2)")
                raise RuntimeError("the caller fails after its write")
        assert await pool.fetchval("SELECT array_agg(n) FROM written") == [1]
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def pgbouncer(postgres_server: PostgresProcess) -> Iterator[tuple[str, str]]:
    """(a DSN through PgBouncer in transaction mode, the database's own DSN)."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    assert Path(binary).is_file(), "PgBouncer is not installed: run `make test-tools`"
    create_database(postgres_server.dsn, "pooled")
    server = EmbeddedPostgres(postgres_server.state_dir)
    port = free_port()
    # Outside pytest's base directory, readable by the user PgBouncer runs as.
    root = Path(tempfile.mkdtemp(prefix="ragmesh-pgbouncer-"))
    root.chmod(0o755)
    config = root / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"pooled = host={server.socket_dir} port={server.port} dbname=pooled user={server.user}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\nquery_wait_timeout = 20\n"
        f"default_pool_size = {SERVER_CONNECTIONS}\nmax_client_conn = 100\n"
    )
    config.chmod(0o644)
    run_as = ["-u", SERVICE_USER_AS_ROOT] if os.geteuid() == 0 else []
    try:
        with running_process([binary, *run_as, str(config)], root / "pgbouncer.log") as process:
            dsn = f"postgresql://{quote(server.user)}@127.0.0.1:{port}/pooled"
            eventually(lambda: _answers(dsn, process), 30, "PgBouncer accepting connections")
            yield dsn, server.dsn(database="pooled")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _answers(dsn: str, process: ServerProcess) -> bool:
    assert process.popen.poll() is None, f"PgBouncer exited:\n{process.log()}"

    async def connect() -> bool:
        try:
            conn = await asyncpg.connect(dsn, statement_cache_size=0)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return run_coroutine(connect)


async def test_without_the_setting_pgbouncer_refuses_the_session_settings(
    pgbouncer: tuple[str, str],
) -> None:
    pooled, _direct = pgbouncer
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
        await create_pool(
            pooled,
            application_name="pooling-test",
            min_size=1,
            max_size=1,
            statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        )


def _document(doc: str, text: str, vector: np.ndarray) -> PreparedDocument:
    return PreparedDocument(doc, text, {"n": float(doc)}, [Passage(0, text, vector)])


async def test_search_runs_through_pgbouncer_in_transaction_mode(
    pgbouncer: tuple[str, str],
) -> None:
    pooled, direct = pgbouncer
    backend = PgVectorBackend(pooled, _settings(migrate_dsn=direct))
    await backend.start()  # migrations on `direct`: their advisory lock holds a session
    try:
        await backend.create_collection(CollectionSpec("pooled", 8, "test", 16, 64))
        rng = np.random.default_rng(27)
        vectors = rng.normal(size=(200, 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        words = ["alpha", "beta", "gamma", "delta"]
        await backend.upsert(
            "pooled",
            [_document(str(i), f"{words[i % 4]} item{i}", vectors[i]) for i in range(200)],
        )

        async def one_round(i: int) -> None:
            async with backend.pool.acquire() as conn:
                assert await _settings_in_transaction(conn) == IN_EFFECT
            dense = await backend.dense_search("pooled", vectors[i], 5, ())
            assert dense[0].document_id == str(i)
            keyword = await backend.keyword_search("pooled", f"item{i}", 5, ())
            assert keyword[0].document_id == str(i)
            fusion = FusionParams(60, 1, 1, FusionMethod.RRF)
            hybrid = await backend.hybrid_search("pooled", vectors[i], f"item{i}", 5, (), fusion)
            assert hybrid[0].passage.document_id == str(i)

        # More concurrent callers than the pool has connections, and the pool's connections
        # more than PgBouncer's server connections.
        await asyncio.gather(*(one_round(i) for i in range(0, 200, 5)))
        assert await backend.delete_documents("pooled", ["0"]) == 1
        assert await backend.count_documents("pooled", ()) == 199
    finally:
        await backend.close()

    # The result cache's pool goes through PgBouncer too.
    cache = ResultCache(pooled, max_bytes=1 << 20, ttl_s=600, transaction_pooling=True)
    await cache.start()
    try:
        computed = []

        async def compute() -> pb.SearchResponse:
            computed.append(1)
            return pb.SearchResponse()

        request = pb.SearchRequest(collection="pooled", query="alpha")
        await cache.search("pooled", request, compute)
        await cache.search("pooled", request, compute)
        assert len(computed) == 1
        await cache.invalidate("pooled")
        await cache.search("pooled", request, compute)
        assert len(computed) == 2
    finally:
        await cache.close()


async def test_the_coordinator_store_runs_through_pgbouncer(
    pgbouncer: tuple[str, str], tmp_path: Path
) -> None:
    """The coordinator names no DSN of its own: it takes search's (the pooler), its migration
    DSN and its mode, and migrates and serves through them."""
    pooled, direct = pgbouncer
    settings = Settings(
        state_dir=tmp_path,
        search={"pg": {"dsn": pooled, "migrate_dsn": direct, "transaction_pooling": True}},
    )
    store = await open_store(settings)
    try:
        assert await store.ping(timeout_s=10)
        assert await store.get(uuid.uuid4()) is None
        assert [i async for i in store.export(ExportFilter(limit=5))] == []
    finally:
        await store.close()
