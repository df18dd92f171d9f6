"""Connecting to PostgreSQL: retries with backoff, the vector wire format, DSN redaction."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragmeshd.postgres.pool import DatabaseConnectError, connect_with_retries
from ragmeshd.runtime.redaction import redact
from ragmeshd.search.backends.pg_connection import decode_vector, encode_vector


async def test_connect_retries_with_backoff_then_fails_clearly(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []

    async def no_sleep(delay: float) -> None:
        sleeps.append(delay)

    monkeypatch.setattr("asyncio.sleep", no_sleep)  # tenacity waits with asyncio.sleep
    attempts = 0

    async def refuse():  # type: ignore[no-untyped-def]
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError("connection refused")

    caplog.set_level(logging.WARNING, logger="ragmesh.search.postgres")
    with pytest.raises(DatabaseConnectError) as raised:
        await connect_with_retries(
            "postgresql://u:secret@db/x", attempts=5, backoff_base_s=2.0, connect=refuse
        )
    assert attempts == 5
    assert sleeps == [2.0, 4.0, 8.0, 16.0]
    message = str(raised.value)
    assert "after 5 attempts" in message and "connection refused" in message
    assert "secret" not in message and "u:***@db" in message
    logged = [r for r in caplog.records if r.getMessage() == "database not reachable, retrying"]
    assert [r.__dict__["attempt"] for r in logged] == [1, 2, 3, 4]


async def test_connect_succeeds_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(delay: float) -> None:
        return None

    monkeypatch.setattr("asyncio.sleep", no_sleep)  # tenacity waits with asyncio.sleep
    outcomes: list[object] = [OSError("not yet"), "connection"]

    async def flaky():  # type: ignore[no-untyped-def]
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert (
        await connect_with_retries("postgresql:///x", attempts=3, backoff_base_s=1, connect=flaky)
        == "connection"
    )


def test_vector_binary_format_round_trips() -> None:
    vector = np.array([1.5, -2.0, 0.25], dtype=np.float32)
    data = encode_vector(vector)
    assert data[:4] == b"\x00\x03\x00\x00"  # dimensions, unused (big-endian int16s)
    assert data[4:8] == b"\x3f\xc0\x00\x00"  # 1.5 as a big-endian float32
    assert decode_vector(data).tolist() == [1.5, -2.0, 0.25]


def test_redact() -> None:
    assert redact("postgresql://user:pw@host:5432/db") == "postgresql://user:***@host:5432/db"
    assert redact("postgresql://postgres@/ragmesh?host=/tmp/x") == (
        "postgresql://postgres@/ragmesh?host=/tmp/x"
    )
