"""A PostgreSQL server that freezes (SIGSTOP: no answer, no closed socket) under statements
already sent: they fail with an unavailable error as soon as the database monitor notices,
never at the caller's deadline, and the same pool works again after the thaw."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from ragmeshd.coordinator.health import database_monitor
from ragmeshd.coordinator.store import InteractionStore
from ragmeshd.postgres import pool as pg_pool
from ragmeshd.postgres.embedded import EmbeddedPostgres

pytestmark = pytest.mark.integration

# The caller's deadline for each statement; a statement that reaches it failed the test.
CALL_DEADLINE_S = 10.0
# The database thaws by itself after this long, whatever the calls do: a call cancelled at its
# deadline can only finish once the server answers again (asyncpg waits for the cancellation).
THAW_AFTER_S = CALL_DEADLINE_S + 3.0
IN_FLIGHT = 4


def postgres_processes(state_dir: Path) -> list[psutil.Process]:
    """The postmaster (first) and every process it started."""
    pid_file = state_dir / "postgres" / "postmaster.pid"
    postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


@contextmanager
def frozen(processes: list[psutil.Process], thaw_after_s: float) -> Iterator[None]:
    def thaw() -> None:
        for process in processes:
            process.send_signal(signal.SIGCONT)

    for process in processes:
        process.send_signal(signal.SIGSTOP)
    timer = asyncio.get_running_loop().call_later(thaw_after_s, thaw)
    try:
        yield
    finally:
        timer.cancel()
        thaw()


async def test_statements_waiting_on_a_frozen_database_fail_unavailable_and_the_pool_recovers(
    coordinator_pg_state: Path,
) -> None:
    pool = await pg_pool.create_pool(
        EmbeddedPostgres(coordinator_pg_state).dsn(),
        application_name="ragmesh-test-frozen",
        min_size=IN_FLIGHT,
        max_size=IN_FLIGHT,
        statement_timeout_ms=30_000,
    )
    store = InteractionStore(pool, export_page_size=10)
    # The coordinator's own monitor (it drops the pool's connections when the database goes).
    monitor = database_monitor(
        store, interval_s=0.5, timeout_s=1.0, set_serving=lambda serving: asyncio.sleep(0)
    )

    async def one_statement() -> object:
        async with pool.acquire() as conn:
            return await conn.fetchval("SELECT 1")

    try:
        await monitor.check()
        assert monitor.available
        monitor.start()
        with frozen(postgres_processes(coordinator_pg_state), THAW_AFTER_S):
            calls = [
                asyncio.create_task(asyncio.wait_for(one_statement(), CALL_DEADLINE_S))
                for _ in range(IN_FLIGHT)
            ]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for outcome in outcomes:
            # Not TimeoutError (the caller's deadline; an OSError too), not an answer.
            assert not isinstance(outcome, TimeoutError), "waited for the caller's deadline"
            assert isinstance(outcome, pg_pool.UNAVAILABLE_ERRORS), repr(outcome)
        # Thawed: the same pool (new connections) answers again, the monitor says so.
        for _ in range(40):
            await monitor.check()
            if monitor.available:
                break
            await asyncio.sleep(0.5)
        assert monitor.available
        assert await asyncio.wait_for(one_statement(), CALL_DEADLINE_S) == 1
    finally:
        await monitor.stop()
        await pool.close()
