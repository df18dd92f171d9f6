"""The embeddings server replaces a model process that died or hung: calls waiting on it
get UNAVAILABLE at once (never INTERNAL, never their deadline), health is NOT_SERVING while
a new process loads, and SERVING again after its self-test."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from services.embeddings.server import SERVICE_NAME
from tests.helpers import ServerProcess, model_process_pid, wait_serving
from tests.integration.conftest import start_embeddings

pytestmark = pytest.mark.integration

# A hung batch is given up after this long (the default is 30 s).
BATCH_TIMEOUT_S = 2.0
CALL_DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("model-recovery") / "embeddings.log"
    env = {
        "RAGMESH_EMBEDDINGS__MODEL_BATCH_TIMEOUT_S": str(BATCH_TIMEOUT_S),
        "RAGMESH_EMBEDDINGS__MODEL_LOAD_BACKOFF_BASE_S": "0.5",
    }
    with start_embeddings(log, env=env) as process:
        wait_serving(process.target, SERVICE_NAME, process)
        yield process


async def health(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2
        )
        return int(reply.status)


async def steady_calls(target: str, stop: asyncio.Event) -> list[tuple[str, float]]:
    """Embed calls back to back (8 at a time) until `stop`: (status name, seconds) each."""
    results: list[tuple[str, float]] = []

    async def caller(client: pb_grpc.EmbeddingsServiceStub, number: int) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await client.Embed(
                    pb.EmbedRequest(inputs=[f"call {number} {time.time()}"] * 4),
                    timeout=CALL_DEADLINE_S,
                )
                results.append(("OK", time.monotonic() - started))
            except grpc.aio.AioRpcError as error:
                results.append((error.code().name, time.monotonic() - started))
                await asyncio.sleep(0.05)

    async with grpc.aio.insecure_channel(target) as channel:
        client = pb_grpc.EmbeddingsServiceStub(channel)
        await asyncio.gather(*(caller(client, n) for n in range(8)))
    return results


async def recover_from(server: ServerProcess, fault: int) -> list[tuple[str, float]]:
    """Send `fault` to the model process under steady calls; wait until the server is
    NOT_SERVING and then SERVING with a new model process; the calls' results."""
    old_pid = model_process_pid(server.popen.pid)
    stop = asyncio.Event()
    calls = asyncio.ensure_future(steady_calls(server.target, stop))
    await asyncio.sleep(1.0)
    os.kill(old_pid, fault)
    deadline = time.monotonic() + 120
    saw_not_serving = False
    while time.monotonic() < deadline:
        status = await health(server.target)
        saw_not_serving |= status == health_pb2.HealthCheckResponse.NOT_SERVING
        if saw_not_serving and status == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the server did not recover:\n{server.log()}")
    await asyncio.sleep(1.0)  # calls succeed again
    stop.set()
    results = await calls
    assert model_process_pid(server.popen.pid) != old_pid
    return results


def check(results: list[tuple[str, float]], slowest_failure_s: float) -> None:
    codes = {code for code, _ in results}
    assert codes <= {"OK", "UNAVAILABLE"}, codes
    assert "UNAVAILABLE" in codes  # the fault was seen...
    assert results[-1][0] == "OK"  # ...and is over
    failures = [seconds for code, seconds in results if code != "OK"]
    # Nobody waited for the deadline.
    assert max(failures) < slowest_failure_s, max(failures)


async def test_a_killed_model_process_is_replaced(server: ServerProcess) -> None:
    results = await recover_from(server, signal.SIGKILL)
    check(results, slowest_failure_s=5.0)
    assert '"model process replaced"' in server.log()


async def test_a_hung_model_process_is_killed_and_replaced(server: ServerProcess) -> None:
    results = await recover_from(server, signal.SIGSTOP)
    check(results, slowest_failure_s=BATCH_TIMEOUT_S + 5.0)
    assert '"batch hung"' in server.log()
