"""The server interceptors on a real in-process grpc.aio server with a failing handler."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator

import grpc
import pytest

from ragmeshd.runtime import metrics
from ragmeshd.runtime.auth import AuthInterceptor, KeyStore, KeyVerifier
from ragmeshd.runtime.channels import metadata_interceptors
from ragmeshd.runtime.errors import invalid_argument
from ragmeshd.runtime.interceptors import server_interceptors
from ragmeshd.runtime.logs import JsonFormatter
from tests.helpers import expect_error

SERVICE = "test.v1.ProbeService"


async def explode(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("secret detail /etc/passwd")


async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise invalid_argument("field x must be positive")


async def refuse_at_length(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise invalid_argument("name " + "a" * 200_000 + " is too long")


async def fail_after_client_left(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    try:
        await asyncio.sleep(0.5)
    except asyncio.CancelledError:
        # Domain code that turns the cancellation into an error of its own.
        raise RuntimeError("pool closed while waiting") from None
    raise RuntimeError("the client should have left")


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    logging.getLogger("ragmesh.test").info("handled")
    return request


async def answer_then_stall(
    request: bytes, context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    yield b"first answer"
    await asyncio.sleep(30)
    yield b"too late"


def handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Explode": grpc.unary_unary_rpc_method_handler(explode),
            "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "RefuseAtLength": grpc.unary_unary_rpc_method_handler(refuse_at_length),
            "FailAfterClientLeft": grpc.unary_unary_rpc_method_handler(fail_after_client_left),
            "AnswerThenStall": grpc.unary_stream_rpc_method_handler(answer_then_stall),
        },
    )


@pytest.fixture
def captured_log() -> AsyncIterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("probe"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    yield stream  # type: ignore[misc]
    root.removeHandler(handler)
    root.setLevel(previous)


async def start(authentication: AuthInterceptor | None = None) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(interceptors=server_interceptors(authentication))
    server.add_generic_rpc_handlers((handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def call(target: str, method: str, metadata: tuple = (), interceptors: list | None = None):  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
        rpc = channel.unary_unary(f"/{SERVICE}/{method}")
        return await rpc(b"payload", metadata=metadata, timeout=10)


async def test_unexpected_exception_shows_only_an_error_id(captured_log: io.StringIO) -> None:
    server, target = await start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(target, "Explode")
    finally:
        await server.stop(None)
    assert error.value.code() == grpc.StatusCode.INTERNAL
    details = error.value.details() or ""
    match = re.fullmatch(r"internal error \(error_id=([0-9a-f]{16})\)", details)
    assert match, details
    assert "secret" not in details and "RuntimeError" not in details
    lines = [json.loads(line) for line in captured_log.getvalue().splitlines()]
    logged = [line for line in lines if line.get("error_id") == match.group(1)]
    assert len(logged) == 1 and logged[0]["level"] == "error"
    assert "RuntimeError: secret detail /etc/passwd" in logged[0]["traceback"]


async def test_expected_failure_keeps_its_code_and_message() -> None:
    server, target = await start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(target, "Refuse")
    finally:
        await server.stop(None)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "field x must be positive"


async def test_log_lines_carry_the_request_id_and_one_line_per_rpc(
    captured_log: io.StringIO,
) -> None:
    server, target = await start()
    try:
        await call(target, "Echo", metadata=(("x-request-id", "req-42"),))
        await call(target, "Echo")
    finally:
        await server.stop(None)
    lines = [json.loads(line) for line in captured_log.getvalue().splitlines()]
    finished = [line for line in lines if line["event"] == "rpc finished"]
    assert len(finished) == 2
    assert finished[0]["request_id"] == "req-42"
    assert finished[0]["grpc_method"] == f"/{SERVICE}/Echo"
    assert finished[0]["grpc_code"] == "OK" and finished[0]["duration_ms"] >= 0
    assert {"time", "level", "service", "version"} <= finished[0].keys()
    handled = [line for line in lines if line["event"] == "handled"]
    assert handled[0]["request_id"] == "req-42"
    # A call without an id gets one of its own.
    assert finished[1]["request_id"] and finished[1]["request_id"] != "req-42"


async def test_metrics_count_rpcs_by_method_and_code() -> None:
    labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Refuse"}
    before = metrics.GRPC_HANDLED.labels(**labels, grpc_code="INVALID_ARGUMENT")._value.get()
    server, target = await start()
    try:
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await call(target, "Refuse")
    finally:
        await server.stop(None)
    after = metrics.GRPC_HANDLED.labels(**labels, grpc_code="INVALID_ARGUMENT")._value.get()
    assert after - before == 3
    assert metrics.GRPC_STARTED.labels(**labels)._value.get() >= 3


async def test_keys_are_checked_and_revocation_takes_effect(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("ragmeshd.runtime.auth.RELOAD_INTERVAL_S", 0.0)
    store = KeyStore(tmp_path / "keys")
    # The probe service is no ragmesh API, so only `admin` may call it.
    key = store.create("user", scopes=("admin",))
    server, target = await start(AuthInterceptor(KeyVerifier(store)))
    try:
        assert await call(target, "Echo", interceptors=metadata_interceptors(key)) == b"payload"
        assert await call(target, "Echo", metadata=(("x-api-key", key),)) == b"payload"
        for metadata in ((), (("authorization", "Bearer nope"),), (("x-api-key", key + "x"),)):
            await expect_error(
                call(target, "Echo", metadata=metadata), grpc.StatusCode.UNAUTHENTICATED
            )
        store.revoke(key.split("_")[1])
        await expect_error(
            call(target, "Echo", interceptors=metadata_interceptors(key)),
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or invalid API key",
        )
    finally:
        await server.stop(None)


def test_the_store_keeps_only_hashes_in_a_private_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = KeyStore(tmp_path / "keys")
    key = store.create("user")
    text = store.path.read_text()
    secret = key.split("_", 2)[2]  # the secret itself may contain "_"
    assert secret not in text
    assert store.path.stat().st_mode & 0o777 == 0o600
    key_file = store.ensure_named_key("admin")
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert store.ensure_named_key("admin") == key_file
    assert [k.name for k in store.load()] == ["user", "admin"]


async def test_a_huge_status_message_is_cut_to_fit_a_header() -> None:
    server, target = await start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(target, "RefuseAtLength")
    finally:
        await server.stop(None)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.value.details() or ""
    assert len(details) <= 1000 and details.endswith("(cut from 200017 characters)")


async def test_a_failure_after_the_client_left_is_not_logged_as_internal(
    captured_log: io.StringIO,
) -> None:
    server, target = await start()
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            await expect_error(
                channel.unary_unary(f"/{SERVICE}/FailAfterClientLeft")(b"", timeout=0.05),
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
            await asyncio.sleep(0.3)  # the handler runs on after the client's deadline
    finally:
        await server.stop(None)
    lines = [json.loads(line) for line in captured_log.getvalue().splitlines()]
    events = [line["event"] for line in lines]
    assert "unhandled exception" not in events
    assert "call ended after its client left" in events


async def test_a_stream_ends_itself_with_deadline_exceeded_before_its_deadline() -> None:
    """The server's own status, not the client's timer (nor Envoy's reset, which a client
    sees as INTERNAL) ends a stream whose deadline passes after its first answer."""
    server, target = await start()
    answers = []
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stream = channel.unary_stream(f"/{SERVICE}/AnswerThenStall")(b"", timeout=1.0)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                async for answer in stream:
                    answers.append(answer)
    finally:
        await server.stop(None)
    assert answers == [b"first answer"]
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.value.details() == "the call's deadline passed before the stream was complete"
