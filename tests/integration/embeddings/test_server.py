"""The embeddings server as a real process with the real model."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from ragmeshd.embeddings.server import SERVICE_NAME
from ragmeshd.executables import grpcurl_path
from tests.helpers import ServerProcess, start_embeddings, wait_serving

pytestmark = pytest.mark.integration

TEXTS = [
    "The mitochondria is the powerhouse of the cell.",
    "Envoy retries idempotent gRPC calls on another host.",
    "PostgreSQL stores vectors with the pgvector extension.",
    "a",
    "Ünïcødé and emoji 🚀 still embed fine.",
]


def stub(target: str) -> pb_grpc.EmbeddingsServiceStub:
    return pb_grpc.EmbeddingsServiceStub(grpc.aio.insecure_channel(target))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_embed_matches_sentence_transformers(
    embeddings_server: ServerProcess, reference_model
) -> None:
    response = await stub(embeddings_server.target).Embed(pb.EmbedRequest(inputs=TEXTS))
    expected = reference_model.encode(TEXTS, convert_to_numpy=True)
    assert response.model == "all-MiniLM-L6-v2"
    assert response.dimensions == 384
    assert len(response.embeddings) == len(TEXTS)
    for embedding, reference in zip(response.embeddings, expected, strict=True):
        vector = np.array(embedding.values, dtype=np.float32)
        assert vector.shape == (384,)
        assert cosine(vector, reference) >= 0.9999
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-4
        assert embedding.token_count >= 3
        assert not embedding.truncated


async def test_hundred_concurrent_calls_each_get_their_own_vector(
    embeddings_server: ServerProcess, reference_model
) -> None:
    texts = [f"concurrent request number {i} about topic {i * 7 % 13}" for i in range(100)]
    client = stub(embeddings_server.target)
    responses = await asyncio.gather(
        *(client.Embed(pb.EmbedRequest(inputs=[text]), timeout=60) for text in texts)
    )
    expected = reference_model.encode(texts, convert_to_numpy=True)
    for response, reference in zip(responses, expected, strict=True):
        assert cosine(np.array(response.embeddings[0].values), reference) >= 0.9999
    info = await client.Info(pb.InfoRequest())
    # The batcher merged calls: fewer batches than calls.
    assert info.batches_run < info.texts_embedded


async def test_long_input_is_truncated_and_reported(embeddings_server: ServerProcess) -> None:
    long_text = "token " * 600
    response = await stub(embeddings_server.target).Embed(pb.EmbedRequest(inputs=[long_text]))
    assert response.embeddings[0].truncated
    assert response.embeddings[0].token_count > 256


async def test_normalize_false_returns_the_model_output(embeddings_server: ServerProcess) -> None:
    response = await stub(embeddings_server.target).Embed(
        pb.EmbedRequest(inputs=TEXTS[:1], normalize=False)
    )
    # all-MiniLM-L6-v2 ends in a Normalize layer, so its own output is unit length too.
    assert len(response.embeddings[0].values) == 384


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"inputs": []}, "inputs is empty: send 1 to 32 texts"),
        ({"inputs": ["ok", ""]}, r"inputs\[1\] is empty"),
        ({"inputs": ["x"] * 33}, "inputs has 33 texts; the limit is 32"),
        ({"inputs": ["ok", "y" * 10_001]}, r"inputs\[1\] has 10001 characters; the limit is 10000"),
        (
            {"inputs": ["fine", "word " * 400], "truncate": False},
            r"inputs\[1\] is \d+ tokens long; the model's window is 256 tokens",
        ),
    ],
)
async def test_bad_input_is_invalid_argument(
    embeddings_server: ServerProcess, request_fields: dict, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(embeddings_server.target).Embed(pb.EmbedRequest(**request_fields))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() is not None
    import re

    assert re.search(message, error.value.details())


async def test_undecodable_request_is_not_internal(embeddings_server: ServerProcess) -> None:
    """A string field holding invalid UTF-8 must not produce INTERNAL."""
    raw = bytes([0x0A, 0x02, 0xC3, 0x28])  # field 1 (inputs), 2 bytes, invalid UTF-8
    async with grpc.aio.insecure_channel(embeddings_server.target) as channel:
        call = channel.unary_unary(
            f"/{SERVICE_NAME}/Embed",
            request_serializer=lambda payload: payload,
            response_deserializer=lambda payload: payload,
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(raw)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not parse" in (error.value.details() or "")


async def test_expired_deadline_is_deadline_exceeded(embeddings_server: ServerProcess) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(embeddings_server.target).Embed(
            pb.EmbedRequest(inputs=["too late " * 50] * 32), timeout=0.001
        )
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_embed_stream_answers_in_order(
    embeddings_server: ServerProcess, reference_model
) -> None:
    messages = [
        pb.EmbedStreamRequest(sequence=100 + i, inputs=[f"bulk {i}-{j}" for j in range(i + 1)])
        for i in range(6)
    ]

    async def requests():  # type: ignore[no-untyped-def]
        for message in messages:
            yield message

    responses = [r async for r in stub(embeddings_server.target).EmbedStream(requests())]
    assert [r.sequence for r in responses] == [m.sequence for m in messages]
    for message, response in zip(messages, responses, strict=True):
        expected = reference_model.encode(list(message.inputs), convert_to_numpy=True)
        got = [np.array(e.values) for e in response.embeddings]
        assert len(got) == len(expected)
        assert all(cosine(g, e) >= 0.9999 for g, e in zip(got, expected, strict=True))


async def test_embed_stream_rejects_a_bad_message_by_sequence(
    embeddings_server: ServerProcess,
) -> None:
    async def requests():  # type: ignore[no-untyped-def]
        yield pb.EmbedStreamRequest(sequence=1, inputs=["good"])
        yield pb.EmbedStreamRequest(sequence=2, inputs=[""])

    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in stub(embeddings_server.target).EmbedStream(requests()):
            pass
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message sequence=2: inputs[0] is empty" in (error.value.details() or "")


def test_grpcurl_lists_and_calls_through_reflection(embeddings_server: ServerProcess) -> None:
    grpcurl = grpcurl_path()
    listed = subprocess.run(
        [grpcurl, "-plaintext", embeddings_server.target, "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    assert SERVICE_NAME in listed.stdout.split()
    described = subprocess.run(
        [grpcurl, "-plaintext", embeddings_server.target, "describe", SERVICE_NAME],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "rpc Embed" in described.stdout and "rpc EmbedStream" in described.stdout
    called = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-d",
            '{"inputs": ["hello mesh"]}',
            embeddings_server.target,
            f"{SERVICE_NAME}/Embed",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body = json.loads(called.stdout)
    assert body["dimensions"] == 384 and len(body["embeddings"][0]["values"]) == 384


async def test_a_servers_life_loading_serving_then_a_graceful_stop(tmp_path: Path) -> None:
    """One server from start to stop (each start loads the model: seconds): health goes
    NOT_SERVING to SERVING while Embed says it is loading; then SIGTERM finishes the calls in
    flight before the process exits 0."""
    with start_embeddings(tmp_path / "life.log") as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            client = pb_grpc.EmbeddingsServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                wait_for_ready=True,
                timeout=120,
            )
            statuses = [(await watch.read()).status]
            assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING]
            # While the model loads, Embed says so.
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await client.Embed(pb.EmbedRequest(inputs=["early"]))
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "loading" in (error.value.details() or "")
            statuses.append((await watch.read()).status)
            assert statuses[-1] == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
            response = await client.Embed(pb.EmbedRequest(inputs=["now ready"]))
            assert len(response.embeddings) == 1

            calls = [
                asyncio.ensure_future(
                    client.Embed(pb.EmbedRequest(inputs=[f"in flight {i} " * 30] * 8), timeout=60)
                )
                for i in range(24)
            ]
            await asyncio.sleep(0.3)
            server.popen.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*calls, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures
        assert await asyncio.to_thread(server.popen.wait, 30) == 0
        assert '"event": "shutting down"' in server.log()


async def test_full_queue_is_resource_exhausted(tmp_path: Path) -> None:
    with start_embeddings(
        tmp_path / "tiny-queue.log", "--max-queue-texts", "4", "--max-batch-texts", "2"
    ) as server:
        wait_serving(server.target, SERVICE_NAME, server)
        async with grpc.aio.insecure_channel(server.target) as channel:
            client = pb_grpc.EmbeddingsServiceStub(channel)
            results = await asyncio.gather(
                *(
                    client.Embed(pb.EmbedRequest(inputs=[f"flood {i} " * 40] * 2), timeout=60)
                    for i in range(30)
                ),
                return_exceptions=True,
            )
    codes = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert any(not isinstance(r, BaseException) for r in results)


# Long (`make test-long`): two model processes fail to load in turn. In the suite,
# tests/unit/runtime/test_startup.py covers the start-up retries and their last failure.
@pytest.mark.long
def test_model_that_cannot_load_exits_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    env = {
        "RAGMESH_EMBEDDINGS__MODEL_LOAD_ATTEMPTS": "2",
        "RAGMESH_EMBEDDINGS__MODEL_LOAD_BACKOFF_BASE_S": "0.1",
    }
    with start_embeddings(tmp_path / "broken.log", "--model-path", str(missing), env=env) as server:
        assert server.popen.wait(60) == 1
        log = server.log()
    assert "could not load the embedding model after 2 attempts" in log
    assert str(missing) in log
    assert '"retry_in_s": 0.1' in log


async def test_a_large_call_that_finds_the_queue_empty_is_never_shed(tmp_path: Path) -> None:
    """Load shedding counts the queue ahead of a call, not the call's own texts: an
    ingestion's upsert of a whole call (32 texts) is served one call at a time even when encoding it
    takes far longer than the queue-wait bound (here 1 ms)."""
    env = {"RAGMESH_EMBEDDINGS__MAX_QUEUE_WAIT_MS": "1"}
    with start_embeddings(tmp_path / "no-queue.log", env=env) as server:
        wait_serving(server.target, SERVICE_NAME, server)
        async with grpc.aio.insecure_channel(server.target) as channel:
            client = pb_grpc.EmbeddingsServiceStub(channel)
            for call in range(3):  # the first full batch measures the throughput
                texts = [f"ingested passage {call}-{i} " * 20 for i in range(32)]
                response = await client.Embed(pb.EmbedRequest(inputs=texts), timeout=120)
                assert len(response.embeddings) == 32
            info = await client.Info(pb.InfoRequest())
    assert info.texts_embedded >= 3 * 32
