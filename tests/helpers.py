"""Shared test plumbing: free ports, real server processes stopped by their own PIDs, waiting
for an embedded PostgreSQL, waiting for a condition (`eventually`) and expecting a gRPC error
(`expect_error`, `rpc_error`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragmeshd.bench.ports import free_port
from ragmeshd.postgres.embedded import accepts_connections
from ragmeshd.runtime.tls import replica_channel_options

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def eventually(
    condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.2
) -> None:
    """Poll `condition` until it is truthy; fail naming `what` if it is not within `timeout_s`
    (a hang guard, not a speed bound)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(interval_s)


async def eventually_async(
    condition: Callable[[], Awaitable[object] | object],
    timeout_s: float,
    what: str,
    interval_s: float = 0.2,
) -> None:
    """`eventually` inside an event loop: `condition` may be a coroutine function or a plain
    one, and the loop keeps running between polls."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        await asyncio.sleep(interval_s)


def _assert_rpc_error(
    error: grpc.RpcError, code: grpc.StatusCode, fragments: tuple[str, ...]
) -> str:
    details = error.details() or ""  # type: ignore[attr-defined]
    assert error.code() == code, (error.code(), details)  # type: ignore[attr-defined]
    for fragment in fragments:
        assert fragment in details, details
    return details


async def expect_error(call: Awaitable[object], code: grpc.StatusCode, *fragments: str) -> str:
    """Await `call`; it must fail with `code` and details containing every fragment. The
    details, for further checks."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return _assert_rpc_error(error, code, fragments)
    raise AssertionError(f"expected {code.name}, the call succeeded")


@contextmanager
def rpc_error(code: grpc.StatusCode, *fragments: str) -> Iterator[list[str]]:
    """`with rpc_error(code) as details:` -- the block must raise a gRPC error with `code` (and
    details containing every fragment); `details[0]` holds its details afterwards."""
    details: list[str] = []
    try:
        yield details
    except grpc.RpcError as error:
        details.append(_assert_rpc_error(error, code, fragments))
        return
    raise AssertionError(f"expected {code.name}, nothing was raised")


@dataclass
class ServerProcess:
    popen: subprocess.Popen[bytes]
    target: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return int(self.popen.returncode)


def ragmesh_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ragmeshd.cli", *args]


@contextmanager
def running_process(
    args: list[str], log_path: Path, env: dict[str, str] | None = None, target: str = ""
) -> Iterator[ServerProcess]:
    """Start `args` with output in `log_path`; always stopped (by PID) on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
        )
    process = ServerProcess(popen, target, log_path)
    try:
        yield process
    finally:
        process.stop()


def wait_serving(
    target: str,
    service: str,
    process: ServerProcess | None = None,
    timeout_s: float = 120.0,
    credentials: grpc.ChannelCredentials | None = None,
    server_name_of: str | None = None,
) -> None:
    """Poll grpc.health.v1 until `service` is SERVING; fail with the server's log if not.

    With `credentials`, `server_name_of` is the mesh service (e.g. "search") whose DNS name the
    replica's certificate must carry: its only name (ragmeshd/runtime/tls.py)."""
    deadline = time.monotonic() + timeout_s
    options = replica_channel_options(server_name_of) if server_name_of else []
    channel = (
        grpc.secure_channel(target, credentials, options=options)
        if credentials
        else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.popen.poll() is not None:
                raise AssertionError(f"server exited early:\n{process.log()}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    log = process.log() if process else ""
    raise AssertionError(f"{service} at {target} never became SERVING:\n{log}")


def run_coroutine(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside an async test (a thread
    of its own has no running event loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def wait_postgres(dsn: str, process: ServerProcess, timeout_s: float = 60.0) -> None:
    """Poll until PostgreSQL at `dsn` accepts a connection; fail with its log if not."""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise AssertionError(f"postgres exited early:\n{process.log()}")
        if run_coroutine(lambda: accepts_connections(dsn)):
            return
        time.sleep(0.2)
    raise AssertionError(f"postgres never answered:\n{process.log()}")


async def call_every_rpc(
    channel: grpc.aio.Channel, service_prefix: str = "ragmesh.", timeout_s: float = 10.0
) -> dict[str, str]:
    """Call every RPC of every ragmesh service whose full name starts with `service_prefix`
    once with an empty request; the status code name of each, by method path ("OK" when it
    succeeded)."""
    from google.protobuf import message_factory

    from ragmeshd.runtime.api import API_FILES

    codes: dict[str, str] = {}
    for file in API_FILES:
        for service in file.services_by_name.values():
            if not service.full_name.startswith(service_prefix):
                continue
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                request_class = message_factory.GetMessageClass(method.input_type)
                response_class = message_factory.GetMessageClass(method.output_type)
                kind = (
                    ("stream" if method.client_streaming else "unary")
                    + "_"
                    + ("stream" if method.server_streaming else "unary")
                )
                callable_ = getattr(channel, kind)(
                    path,
                    request_serializer=request_class.SerializeToString,
                    response_deserializer=response_class.FromString,
                )
                request: object = request_class()
                if method.client_streaming:
                    request = iter([request_class()])
                try:
                    call = callable_(request, timeout=timeout_s)
                    if method.server_streaming:
                        async for _ in call:
                            pass
                    else:
                        await call
                    codes[path] = "OK"
                except grpc.aio.AioRpcError as error:
                    codes[path] = error.code().name
    return codes


def model_process_pid(server_pid: int, timeout_s: float = 30.0) -> int:
    """The pid of an embeddings server's model process (its multiprocessing child)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in psutil.Process(server_pid).children():
            try:
                if any("spawn_main" in part for part in child.cmdline()):
                    return int(child.pid)
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError(f"embeddings server {server_pid} has no model process")


def start_embeddings(log_path: Path, *extra_args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """An embeddings server on a free loopback port (not yet waited for)."""
    target = f"127.0.0.1:{free_port()}"
    args = ragmesh_command("serve", "embeddings", "--listen", target, *extra_args)
    return running_process(args, log_path, env=env, target=target)
