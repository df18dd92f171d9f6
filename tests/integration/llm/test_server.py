"""The llm server as a real process with the real model (SmolLM2-135M): health turns
SERVING only after the warm-up, Generate streams text then a summary, bad requests are
INVALID_ARGUMENT, the queue bound is RESOURCE_EXHAUSTED, a client that leaves frees the model,
and /metrics carries the time to first token, tokens/s and the queue length."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

pytest.importorskip("llama_cpp")

from ragmesh.llm.v1 import llm_service_pb2 as pb
from ragmesh.llm.v1 import llm_service_pb2_grpc as pb_grpc
from ragmeshd.llm.server import SERVICE_NAME
from tests.helpers import (
    ServerProcess,
    free_port,
    ragmesh_command,
    running_process,
    wait_serving,
)

pytestmark = pytest.mark.integration

QUESTION = pb.GenerateRequest(
    messages=[
        pb.ChatMessage(role=pb.MESSAGE_ROLE_SYSTEM, content="You are brief."),
        pb.ChatMessage(role=pb.MESSAGE_ROLE_USER, content="What is the capital of France?"),
    ],
    max_tokens=16,
    temperature=0.0,
)


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    state = tmp_path_factory.mktemp("llm")
    target = f"127.0.0.1:{free_port()}"
    metrics = f"127.0.0.1:{free_port()}"
    env = {
        "RAGMESH_STATE_DIR": str(state),
        "RAGMESH_LLM__METRICS_LISTEN": metrics,
        "RAGMESH_LLM__MAX_WAITING": "1",
        "RAGMESH_LLM__CONTEXT_WINDOW_TOKENS": "1024",
        "RAGMESH_LLM__MAX_TOKENS_LIMIT": "512",
        "RAGMESH_LLM__THREADS": "2",
    }
    args = ragmesh_command("serve", "llm", "--listen", target)
    with running_process(args, Path(state) / "llm.log", env=env, target=target) as process:
        wait_serving(target, SERVICE_NAME, process)
        yield process, metrics


def stub(target: str) -> pb_grpc.LlmServiceStub:
    return pb_grpc.LlmServiceStub(grpc.aio.insecure_channel(target))


async def _generate(target: str, request: pb.GenerateRequest) -> tuple[str, pb.GenerateSummary]:
    text, summary = "", None
    async for response in stub(target).Generate(request, timeout=60):
        if response.HasField("summary"):
            summary = response.summary
        else:
            text += response.delta.text
    assert summary is not None
    return text, summary


async def test_generate_streams_text_then_a_summary(llm_server) -> None:  # type: ignore[no-untyped-def]
    process, _ = llm_server
    text, summary = await _generate(process.target, QUESTION)
    assert "Paris" in text
    assert summary.completion_token_count >= 1
    assert summary.prompt_token_count > 10
    assert summary.time_to_first_token_ms > 0
    assert summary.model == "SmolLM2-135M-Instruct.Q4_1"
    assert summary.finish_reason in (pb.FINISH_REASON_END_OF_TEXT, pb.FINISH_REASON_LENGTH)


async def test_info_describes_the_model_and_its_limits(llm_server) -> None:  # type: ignore[no-untyped-def]
    process, _ = llm_server
    info = await stub(process.target).Info(pb.InfoRequest(), timeout=10)
    assert info.ready
    assert info.context_window_tokens == 1024
    assert info.threads == 2
    assert info.max_waiting == 1


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (pb.GenerateRequest(), "messages is empty"),
        (
            pb.GenerateRequest(messages=[pb.ChatMessage(content="hi")]),
            "role is unset",
        ),
        (
            pb.GenerateRequest(
                messages=[pb.ChatMessage(role=pb.MESSAGE_ROLE_USER, content="hi")],
                max_tokens=513,
            ),
            "llm.max_tokens_limit",
        ),
        (
            pb.GenerateRequest(
                messages=[pb.ChatMessage(role=pb.MESSAGE_ROLE_USER, content="word " * 3000)]
            ),
            "context window",
        ),
    ],
)
async def test_bad_requests_are_invalid_argument(llm_server, request_, words) -> None:  # type: ignore[no-untyped-def]
    process, _ = llm_server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _generate(process.target, request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in caught.value.details()


async def test_past_the_queue_bound_is_resource_exhausted_and_leaving_frees_the_model(
    llm_server,  # type: ignore[no-untyped-def]
) -> None:
    """max_waiting=1: with one generating and one waiting, a third is refused; the two
    clients that leave stop their generations, and the next call is served."""
    process, _ = llm_server
    long = pb.GenerateRequest(
        messages=[pb.ChatMessage(role=pb.MESSAGE_ROLE_USER, content="Write a long story.")],
        max_tokens=500,
        temperature=1.0,
        seed=3,
    )
    client = stub(process.target)
    first = client.Generate(long, timeout=120)
    await first.read()  # generating
    second = client.Generate(long, timeout=120)
    info = client.Info(pb.InfoRequest(), timeout=10)
    while (await info).waiting < 1:  # the second is queued
        info = client.Info(pb.InfoRequest(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _generate(process.target, QUESTION)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "llm.max_waiting" in caught.value.details()
    first.cancel()
    await second.read()  # the second got the model
    second.cancel()
    text, _ = await _generate(process.target, QUESTION)
    assert text


async def test_metrics_carry_time_to_first_token_tokens_per_second_and_queue(llm_server) -> None:  # type: ignore[no-untyped-def]
    process, metrics = llm_server
    await _generate(process.target, QUESTION)
    url = f"http://{metrics}/metrics"
    body = (
        await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    ).decode()
    for name in (
        "ragmesh_llm_time_to_first_token_seconds_count",
        "ragmesh_llm_tokens_per_second_count",
        "ragmesh_llm_queue_length",
        "ragmesh_llm_completion_tokens_total",
    ):
        assert name in body, name
