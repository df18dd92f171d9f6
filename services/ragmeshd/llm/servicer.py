"""The LlmService RPC handlers: validation, the engine's errors as status codes, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from ragmesh.llm.v1 import llm_service_pb2 as pb
from ragmesh.llm.v1 import llm_service_pb2_grpc as pb_grpc
from ragmeshd.llm.engine import LlmEngine
from ragmeshd.llm.records import (
    FINISH_END_OF_TEXT,
    FINISH_LENGTH,
    FINISH_STOP_SEQUENCE,
    GenerationStats,
    NotReadyError,
    PromptTooLongError,
    QueueFullError,
)
from ragmeshd.llm.validation import InvalidRequestError, check_generate
from ragmeshd.runtime.errors import RpcFailure, invalid_argument, unavailable
from ragmeshd.settings.llm import LlmSettings

_FINISH_REASONS = {
    FINISH_END_OF_TEXT: pb.FINISH_REASON_END_OF_TEXT,
    FINISH_STOP_SEQUENCE: pb.FINISH_REASON_STOP_SEQUENCE,
    FINISH_LENGTH: pb.FINISH_REASON_LENGTH,
}


def summary_of(stats: GenerationStats, model: str) -> pb.GenerateSummary:
    return pb.GenerateSummary(
        finish_reason=_FINISH_REASONS.get(stats.finish_reason, pb.FINISH_REASON_UNSPECIFIED),
        prompt_token_count=stats.prompt_tokens,
        completion_token_count=stats.completion_tokens,
        time_to_first_token_ms=stats.time_to_first_token_s * 1000,
        generation_ms=stats.generation_s * 1000,
        queue_ms=stats.queue_s * 1000,
        tokens_per_second=stats.tokens_per_second,
        model=model,
    )


class LlmServicer(pb_grpc.LlmServiceServicer):
    def __init__(self, settings: LlmSettings) -> None:
        self._settings = settings
        # Set once the model has loaded and warmed up; until then Generate is UNAVAILABLE.
        self.engine: LlmEngine | None = None

    def attach(self, engine: LlmEngine) -> None:
        self.engine = engine

    def _ready_engine(self) -> LlmEngine:
        engine = self.engine
        if engine is None or not engine.ready:
            raise unavailable("the language model is loading; retry shortly")
        return engine

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        try:
            turns, params = check_generate(request, self._settings)
        except InvalidRequestError as exc:
            raise invalid_argument(str(exc)) from None
        engine = self._ready_engine()
        try:
            # Cancellation (the client left, its deadline passed) cancels this handler,
            # which closes the stream and stops the generation before its next token.
            async for event in engine.generate(turns, params):
                if isinstance(event, GenerationStats):
                    yield pb.GenerateResponse(summary=summary_of(event, engine.model_name))
                else:
                    yield pb.GenerateResponse(delta=pb.TextDelta(text=event))
        except QueueFullError as exc:
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except PromptTooLongError as exc:
            raise invalid_argument(str(exc)) from None
        except NotReadyError as exc:
            raise unavailable(str(exc)) from None

    async def Info(
        self, request: pb.InfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.InfoResponse:
        settings = self._settings
        engine = self.engine
        response = pb.InfoResponse(
            max_waiting=settings.max_waiting,
            max_tokens_limit=settings.max_tokens_limit,
            default_max_tokens=settings.default_max_tokens,
            context_window_tokens=settings.context_window_tokens,
        )
        if engine is not None:
            response.model = engine.model_name
            response.threads = engine.threads
            response.ready = engine.ready
            response.waiting = engine.waiting
            response.generations_run = engine.generations_run
            response.tokens_generated = engine.tokens_generated
            response.mean_time_to_first_token_ms = engine.mean_time_to_first_token_s * 1000
            response.mean_tokens_per_second = engine.mean_tokens_per_second
        return response
