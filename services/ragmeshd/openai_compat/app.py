"""The adapter's HTTP routes (Starlette): each turns an OpenAI request into a gRPC call to the
mesh, forwarding the caller's `authorization` header so the service checks the caller's key.

    POST /v1/embeddings         EmbeddingsService.Embed  (encoding_format float or base64)
    GET  /v1/models[/{id}]      EmbeddingsService.Info, plus the chat model
    POST /v1/chat/completions   CoordinatorService.Ask   (stream: server-sent events)
    GET  /healthz               200 while serving (Envoy's health check), no key needed
    GET  /openapi.json, /docs   the API's description and Swagger UI (apidocs.py), no key needed
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmeshd.openai_compat import apidocs, convert
from ragmeshd.openai_compat.convert import ApiError

_log = logging.getLogger("ragmesh.openai")
# Headers passed on to the gRPC call: the key and the request id Envoy set.
FORWARDED_HEADERS = ("authorization", "x-api-key", "x-request-id", "traceparent")


@dataclass
class Backends:
    """The gRPC stubs the routes call, and how long each call may take."""

    embeddings: embeddings_grpc.EmbeddingsServiceStub
    coordinator: coordinator_grpc.CoordinatorServiceStub
    embed_timeout_s: float
    ask_timeout_s: float


def create_app(
    backends: Backends, readiness: Callable[[Request], Awaitable[Response]] | None = None
) -> Starlette:
    """The routes; `readiness` answers /healthz (default: always serving)."""
    routes = [
        Route("/healthz", readiness or _healthz, methods=["GET"]),
        Route("/v1/embeddings", _handler(backends, _embeddings), methods=["POST"]),
        Route("/v1/models", _handler(backends, _models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", _handler(backends, _model), methods=["GET"]),
        Route("/v1/chat/completions", _handler(backends, _chat), methods=["POST"]),
        *apidocs.routes(),
    ]
    return Starlette(routes=routes)


Handler = Callable[[Backends, Request], Awaitable[Response]]


def _handler(backends: Backends, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Every failure becomes OpenAI's error object: a refused request or the backend's status
    mapped to HTTP; anything unexpected is logged under an id and answered 500 with the id."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(backends, request)
        except ApiError as error:
            return JSONResponse(error.body(), status_code=error.status)
        except grpc.RpcError as error:
            api_error = convert.from_rpc_error(error)
            return JSONResponse(api_error.body(), status_code=api_error.status)
        except Exception:
            error_id = uuid.uuid4().hex
            _log.exception("unexpected error", extra={"error_id": error_id})
            body = ApiError(500, f"internal error (error id {error_id})", "server_error")
            body.grpc_status = "INTERNAL"
            return JSONResponse(body.body(), status_code=500)

    return endpoint


async def _healthz(_request: Request) -> Response:
    return JSONResponse({"status": "serving"})


def _metadata(request: Request) -> list[tuple[str, str]]:
    return [(name, request.headers[name]) for name in FORWARDED_HEADERS if name in request.headers]


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise convert.invalid(f"the request body is not JSON: {exc}") from exc


async def _info(backends: Backends, request: Request) -> embeddings_pb.InfoResponse:
    return await backends.embeddings.Info(
        embeddings_pb.InfoRequest(), metadata=_metadata(request), timeout=backends.embed_timeout_s
    )


async def _embeddings(backends: Backends, request: Request) -> Response:
    call = convert.parse_embeddings(await _json(request))
    info = await _info(backends, request)
    if call.model != info.model:
        raise ApiError(
            404,
            f"model {call.model!r} does not exist: the embedding model is {info.model!r}",
            param="model",
            code="model_not_found",
            grpc_status="NOT_FOUND",
        )
    if call.dimensions is not None and call.dimensions != info.dimensions:
        raise convert.invalid(
            f"dimensions must be {info.dimensions}, the model's (it cannot be shortened)",
            "dimensions",
        )
    reply = await backends.embeddings.Embed(
        embeddings_pb.EmbedRequest(inputs=call.inputs),
        metadata=_metadata(request),
        timeout=backends.embed_timeout_s,
    )
    return JSONResponse(convert.embeddings_response(reply, call.encoding_format))


async def _models(backends: Backends, request: Request) -> Response:
    info = await _info(backends, request)
    return JSONResponse(convert.models_response(info.model))


async def _model(backends: Backends, request: Request) -> Response:
    info = await _info(backends, request)
    model_id = request.path_params["model_id"]
    if model_id not in (info.model, convert.CHAT_MODEL):
        raise ApiError(
            404,
            f"model {model_id!r} does not exist",
            code="model_not_found",
            grpc_status="NOT_FOUND",
        )
    return JSONResponse(convert.model_object(model_id))


async def _chat(backends: Backends, request: Request) -> Response:
    call = convert.parse_chat(await _json(request))
    if call.model != convert.CHAT_MODEL:
        raise ApiError(
            404,
            f"model {call.model!r} does not exist: chat completions use {convert.CHAT_MODEL!r}",
            param="model",
            code="model_not_found",
            grpc_status="NOT_FOUND",
        )
    stream = backends.coordinator.Ask(
        call.request, metadata=_metadata(request), timeout=backends.ask_timeout_s
    )
    if not call.stream:
        answer, summary, sources = await _collect(stream)
        return JSONResponse(
            convert.chat_response(summary, answer, call.model, convert.now(), sources)
        )
    # Wait for the first message, so that bad input or a missing key is an HTTP error status
    # rather than an error event inside a 200 stream.
    iterator = stream.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        raise ApiError(
            502, "the coordinator ended the answer without a summary", "server_error"
        ) from None
    return StreamingResponse(
        _sse(call, first, iterator),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
    )


async def _collect(
    stream: AsyncIterator[coordinator_pb.AskResponse],
) -> tuple[str, coordinator_pb.AskSummary, coordinator_pb.AnswerSources | None]:
    answer: list[str] = []
    sources = None
    async for message in stream:
        if message.HasField("chunk"):
            if message.chunk.discard_previous:
                answer.clear()
            answer.append(message.chunk.text)
        elif message.HasField("sources"):
            sources = message.sources
        elif message.HasField("summary"):
            return "".join(answer), message.summary, sources
    raise ApiError(502, "the coordinator ended the answer without a summary", "server_error")


async def _sse(
    call: convert.ChatCall,
    first: coordinator_pb.AskResponse,
    rest: AsyncIterator[coordinator_pb.AskResponse],
) -> AsyncIterator[str]:
    """Chunks as `data: {...}` events, ending with `data: [DONE]`. A chunk that restarts the
    answer after a backend failed carries `"ragmesh": {"discard_previous": true}`; the last
    chunk carries the sources (the same `ragmesh` object as a non-streamed response)."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = convert.now()
    model = call.model
    answer: list[str] = []
    sources = None

    def event(body: dict[str, Any]) -> str:
        return f"data: {json.dumps(body)}\n\n"

    yield event(convert.chat_chunk(chunk_id, model, created, {"role": "assistant", "content": ""}))
    message: coordinator_pb.AskResponse | None = first
    try:
        while message is not None:
            if message.HasField("chunk"):
                chunk = message.chunk
                if chunk.discard_previous:
                    answer.clear()
                answer.append(chunk.text)
                extra = {"discard_previous": True} if chunk.discard_previous else None
                delta = {"content": chunk.text}
                yield event(convert.chat_chunk(chunk_id, model, created, delta, None, extra))
            elif message.HasField("sources"):
                sources = message.sources
            elif message.HasField("summary"):
                summary = message.summary
                extra = convert.summary_extra(summary, sources)
                yield event(convert.chat_chunk(chunk_id, model, created, {}, "stop", extra))
                if call.include_usage:
                    body = convert.chat_chunk(chunk_id, model, created, {})
                    body["choices"] = []
                    body["usage"] = convert.usage(summary, "".join(answer))
                    yield event(body)
                break
            message = await anext(rest, None)
    except grpc.RpcError as error:
        yield event(convert.from_rpc_error(error).body())
    yield "data: [DONE]\n\n"
