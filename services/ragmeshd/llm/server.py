"""Wiring of the llm server process."""

from __future__ import annotations

import os
from pathlib import Path

from ragmesh.llm.v1 import llm_service_pb2 as pb
from ragmesh.llm.v1 import llm_service_pb2_grpc as pb_grpc
from ragmeshd.llm.engine import LlmEngine
from ragmeshd.llm.packaged import packaged_model_path
from ragmeshd.llm.records import GenerationStats
from ragmeshd.llm.servicer import LlmServicer
from ragmeshd.runtime import metrics
from ragmeshd.runtime.server import StartupError, service_server
from ragmeshd.settings import Settings

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LlmService"].full_name


def _observe(stats: GenerationStats) -> None:
    metrics.LLM_TIME_TO_FIRST_TOKEN_SECONDS.observe(stats.time_to_first_token_s)
    metrics.LLM_QUEUE_SECONDS.observe(stats.queue_s)
    metrics.LLM_COMPLETION_TOKENS.inc(stats.completion_tokens)
    metrics.LLM_PROMPT_TOKENS.inc(stats.prompt_tokens)
    if stats.tokens_per_second:
        metrics.LLM_TOKENS_PER_SECOND.observe(stats.tokens_per_second)


def model_path(settings: Settings) -> Path:
    """The configured .gguf file, else the packaged one."""
    return Path(settings.llm.model_path) if settings.llm.model_path else packaged_model_path()


async def serve_llm(settings: Settings) -> int:
    """Run the llm server until SIGTERM/SIGINT; returns the exit code. Health is NOT_SERVING
    until the model has loaded and a warm-up generation has passed."""
    config = settings.llm
    server = service_server(settings, "llm", health_names=[SERVICE_NAME])
    servicer = LlmServicer(config)
    pb_grpc.add_LlmServiceServicer_to_server(servicer, server.grpc)
    await server.start()

    async def load_model() -> None:
        try:
            path = model_path(settings)
        except FileNotFoundError as exc:
            raise StartupError(str(exc)) from exc
        engine = LlmEngine(
            path,
            context_window_tokens=config.context_window_tokens,
            threads=config.threads or len(os.sched_getaffinity(0)),
            max_waiting=config.max_waiting,
            batch_tokens=config.batch_tokens,
            on_waiting_changed=metrics.LLM_QUEUE_LENGTH.set,
            on_generation=_observe,
        )
        server.on_stopped(engine.close)
        try:
            await engine.load()
        except (OSError, ValueError) as exc:
            raise StartupError(f"the language model at {path} did not load: {exc}") from exc
        await engine.warm_up()
        servicer.attach(engine)

    return await server.run(load_model())
