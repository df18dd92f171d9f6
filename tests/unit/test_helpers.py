"""The shared waiting and error-expecting helpers of tests/helpers.py."""

from __future__ import annotations

import grpc
import pytest

from tests.helpers import eventually, eventually_async, expect_error, rpc_error


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def test_eventually_returns_once_the_condition_holds_and_names_what_did_not() -> None:
    calls = iter([False, False, True])
    eventually(lambda: next(calls), 60, "the third poll", interval_s=0)
    with pytest.raises(AssertionError, match="never true: not within 0 s"):
        eventually(lambda: False, 0, "never true", interval_s=0)


async def test_eventually_async_takes_coroutine_functions_and_plain_ones() -> None:
    calls = iter([False, True])

    async def condition() -> bool:
        return next(calls)

    await eventually_async(condition, 60, "the second poll", interval_s=0)
    await eventually_async(lambda: True, 60, "at once", interval_s=0)
    with pytest.raises(AssertionError, match="never"):
        await eventually_async(lambda: False, 0, "never", interval_s=0)


async def test_expect_error_checks_the_code_and_the_details() -> None:
    async def failing() -> None:
        raise _error(grpc.StatusCode.NOT_FOUND, "no collection named x")

    details = await expect_error(failing(), grpc.StatusCode.NOT_FOUND, "collection")
    assert details == "no collection named x"
    with pytest.raises(AssertionError):
        await expect_error(failing(), grpc.StatusCode.INTERNAL)

    async def succeeding() -> None:
        return None

    with pytest.raises(AssertionError, match="succeeded"):
        await expect_error(succeeding(), grpc.StatusCode.NOT_FOUND)


def test_rpc_error_is_the_block_form() -> None:
    with rpc_error(grpc.StatusCode.UNAVAILABLE, "down") as details:
        raise _error(grpc.StatusCode.UNAVAILABLE, "search is down")
    assert details == ["search is down"]
    with (
        pytest.raises(AssertionError, match="nothing was raised"),
        rpc_error(grpc.StatusCode.UNAVAILABLE),
    ):
        pass
