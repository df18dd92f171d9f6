"""The LOCAL backend as a service of the mesh: the coordinator's client of LlmService (the
llm server, `ragmesh serve llm`), reached through Envoy like every other service.

It speaks the same interface as the OpenAI-compatible ChatBackend (`stream_chat`, `healthy`,
`config`), so routing, breakers and fallback treat both alike. Every failure of the call
(the service down, its queue full, a deadline, a bad stream) raises BackendError; a call
cancelled by the coordinator's own caller cancels the generation with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import grpc

from ragmesh.llm.v1 import llm_service_pb2 as pb
from ragmesh.llm.v1 import llm_service_pb2_grpc as pb_grpc
from ragmeshd.coordinator.llm_backend import BackendConfig, BackendError, ChatMessage
from ragmeshd.runtime.channels import open_channel

_log = logging.getLogger("ragmesh.coordinator.backend")

_ROLES = {
    "system": pb.MESSAGE_ROLE_SYSTEM,
    "user": pb.MESSAGE_ROLE_USER,
    "assistant": pb.MESSAGE_ROLE_ASSISTANT,
}


class LlmServiceBackend:
    """Streams chat replies from LlmService; safe to share between concurrent calls."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, object]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self.config = config
        self._channel = open_channel(config.base_url, credentials, channel_options, interceptors)
        self._stub = pb_grpc.LlmServiceStub(self._channel)
        # Filled from Info on the first healthy probe: the name the summary reports.
        self.model = config.model

    @property
    def name(self) -> str:
        return self.config.name

    async def aclose(self) -> None:
        await self._channel.close()

    async def healthy(self, timeout_s: float) -> bool:
        """Whether the service answers Info within `timeout_s` with its model ready."""
        try:
            info = await self._stub.Info(pb.InfoRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            _log.info(
                "backend health probe failed",
                extra={"backend": self.name, "error": f"{exc.code().name}: {exc.details()}"},
            )
            return False
        if info.model:
            self.model = info.model
        return info.ready

    async def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, deadline_s: float | None = None
    ) -> AsyncIterator[str]:
        """The reply's text pieces (none empty). Raises BackendError."""
        budget_s = self.config.deadline_s if deadline_s is None else deadline_s
        request = pb.GenerateRequest(
            messages=[
                pb.ChatMessage(role=_ROLES[m["role"]], content=m["content"]) for m in messages
            ],
            max_tokens=max_tokens,
            temperature=self.config.temperature,
        )
        call = self._stub.Generate(request, timeout=min(budget_s, self.config.deadline_s))
        produced = False
        summary: pb.GenerateSummary | None = None
        try:
            async for response in call:
                if response.HasField("summary"):
                    summary = response.summary
                    break
                if response.delta.text:
                    produced = True
                    yield response.delta.text
        except grpc.aio.AioRpcError as exc:
            raise BackendError(f"LlmService {exc.code().name}: {exc.details()}") from None
        except asyncio.CancelledError:
            call.cancel()
            raise
        finally:
            if not call.done():
                call.cancel()
        if summary is None:
            raise BackendError("LlmService ended its stream without a summary")
        if summary.model:
            self.model = summary.model
        if not produced:
            raise BackendError("LlmService generated an empty answer")
