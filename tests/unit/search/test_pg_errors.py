"""A database error that is not the caller's doing reaches the caller as the store being
unavailable or slow (UNAVAILABLE, DEADLINE_EXCEEDED), never as an unhandled exception
(INTERNAL): the chaos suite saw an UpsertDocuments answered INTERNAL while replicas restarted."""

from __future__ import annotations

import asyncpg
import pytest

from ragmeshd.search.backends.base import StoreTimeoutError, StoreUnavailableError
from ragmeshd.search.backends.pg_connection import translated_errors

TRANSIENT = [
    asyncpg.exceptions.SerializationError("could not serialize access"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    asyncpg.exceptions.LockNotAvailableError("could not obtain lock"),
    asyncpg.exceptions.InvalidCachedStatementError("cached plan must not change result type"),
    asyncpg.exceptions.DiskFullError("could not extend file"),
    asyncpg.exceptions.OutOfMemoryError("out of memory"),
    asyncpg.exceptions.AdminShutdownError("terminating connection"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    ),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda error: type(error).__name__)
def test_a_passing_database_state_is_unavailable(error: Exception) -> None:
    with pytest.raises(StoreUnavailableError, match="retry shortly"), translated_errors("x"):
        raise error


def test_a_cancelled_statement_is_a_timeout() -> None:
    with pytest.raises(StoreTimeoutError), translated_errors("x"):
        raise asyncpg.exceptions.QueryCanceledError("canceling statement due to timeout")


def test_a_bug_in_a_statement_stays_a_bug() -> None:
    with pytest.raises(asyncpg.exceptions.UndefinedColumnError), translated_errors("x"):
        raise asyncpg.exceptions.UndefinedColumnError("column does not exist")
