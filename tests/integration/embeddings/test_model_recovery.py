"""The embeddings server replaces a model process that hung: calls waiting on it get
UNAVAILABLE (never INTERNAL, never their deadline), health is NOT_SERVING while a new
process loads, and SERVING again after its self-test. (A killed model process, the same path
without the time limit, is a scenario of tests/chaos/test_kills.py, through Envoy.)"""

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
from ragmeshd.embeddings.server import SERVICE_NAME
from tests.helpers import ServerProcess, model_process_pid, start_embeddings, wait_serving

pytestmark = [pytest.mark.integration, pytest.mark.long]

# A hung batch is given up after this long (the default is 30 s; a real batch on a busy
# 2-core machine can take a few seconds, so not much less).
BATCH_TIMEOUT_S = 10.0
CALL_DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("model-recovery") / "embeddings.log"
    env = {
        "RAGMESH_EMBEDDINGS__MODEL_BATCH_TIMEOUT_S": str(BATCH_TIMEOUT_S),
        "RAGMESH_EMBEDDINGS__MODEL_LOAD_BACKOFF_BASE_S": "0.5",
        # The keeper does not depend on the runtime; torch skips the first start's conversion.
        "RAGMESH_EMBEDDINGS__RUNTIME": "torch",
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


# One call's answer: (status name, seconds it took, time.monotonic() it ended).
Result = tuple[str, float, float]


async def steady_calls(target: str, stop: asyncio.Event, results: list[Result]) -> None:
    """Embed calls back to back (8 at a time) until `stop`, each answer into `results`."""

    async def caller(client: pb_grpc.EmbeddingsServiceStub, number: int) -> None:
        while not stop.is_set():
            started = time.monotonic()
            code = "OK"
            try:
                await client.Embed(
                    pb.EmbedRequest(inputs=[f"call {number} {time.time()}"] * 4),
                    timeout=CALL_DEADLINE_S,
                )
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            results.append((code, time.monotonic() - started, time.monotonic()))
            if code != "OK":
                await asyncio.sleep(0.05)

    async with grpc.aio.insecure_channel(target) as channel:
        client = pb_grpc.EmbeddingsServiceStub(channel)
        await asyncio.gather(*(caller(client, n) for n in range(8)))


async def recover_from(server: ServerProcess, fault: int) -> list[Result]:
    """Send `fault` to the model process under steady calls; wait until the server is
    NOT_SERVING, then SERVING with a new model process, then answering; the calls' results."""
    old_pid = model_process_pid(server.popen.pid)
    stop = asyncio.Event()
    results: list[Result] = []
    calls = asyncio.ensure_future(steady_calls(server.target, stop, results))
    await asyncio.sleep(1.0)
    os.kill(old_pid, fault)
    deadline = time.monotonic() + 180
    saw_not_serving = False
    while time.monotonic() < deadline:
        status = await health(server.target)
        saw_not_serving |= status == health_pb2.HealthCheckResponse.NOT_SERVING
        if saw_not_serving and status == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the server did not recover:\n{server.log()}")
    serving_at = time.monotonic()
    while not any(code == "OK" and ended > serving_at for code, _, ended in results):
        assert time.monotonic() < deadline, f"no call succeeded after recovery:\n{server.log()}"
        await asyncio.sleep(0.1)
    stop.set()
    await calls
    assert model_process_pid(server.popen.pid) != old_pid
    return results


def check(results: list[Result]) -> None:
    codes = {code for code, _, _ in results}
    # Never INTERNAL, and never DEADLINE_EXCEEDED: nobody waited for the deadline.
    assert codes <= {"OK", "UNAVAILABLE"}, codes
    assert "UNAVAILABLE" in codes  # the fault was seen
    failures = [seconds for code, seconds, _ in results if code != "OK"]
    assert max(failures) < CALL_DEADLINE_S / 2, max(failures)


async def test_a_hung_model_process_is_killed_and_replaced(server: ServerProcess) -> None:
    results = await recover_from(server, signal.SIGSTOP)
    check(results)
    assert '"batch hung"' in server.log()
