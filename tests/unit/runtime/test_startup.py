"""Start-up retries (runtime/startup.py): the listed errors are retried with exact
exponential waits and logged; anything else, and the last failure, reach the caller."""

from __future__ import annotations

import logging

import pytest

from ragmeshd.runtime.startup import retry_at_startup

_log = logging.getLogger("ragmesh.test.startup")


async def test_retries_listed_errors_with_exponential_waits(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    waits: list[float] = []

    async def no_sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr("asyncio.sleep", no_sleep)
    outcomes: list[object] = [OSError("not yet"), OSError("still not"), "up"]

    async def flaky() -> object:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    caplog.set_level(logging.WARNING, logger=_log.name)
    result = await retry_at_startup(
        flaky, attempts=3, backoff_base_s=0.5, retry_on=(OSError,), log=_log, message="retrying"
    )
    assert result == "up"
    assert waits == [0.5, 1.0]
    logged = [r.__dict__ for r in caplog.records if r.getMessage() == "retrying"]
    assert [(r["attempt"], r["retry_in_s"]) for r in logged] == [(1, 0.5), (2, 1.0)]
    assert logged[0]["error"] == "OSError: not yet"


async def test_other_errors_and_the_last_failure_are_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_sleep(delay: float) -> None:
        return None

    monkeypatch.setattr("asyncio.sleep", no_sleep)
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await retry_at_startup(
            broken, attempts=5, backoff_base_s=1, retry_on=(OSError,), log=_log, message="x"
        )
    assert calls == 1

    async def down() -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        await retry_at_startup(
            down, attempts=2, backoff_base_s=1, retry_on=(OSError,), log=_log, message="x"
        )
