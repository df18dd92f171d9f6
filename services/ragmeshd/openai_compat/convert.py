"""OpenAI's wire format to ragmesh's protos and back: pure functions, no I/O.

Reference: the OpenAI API's embeddings, models and chat-completions objects, as the official
`openai` client sends and parses them. What ragmesh adds is under a `ragmesh` key, which
OpenAI clients keep as an extra field (`response.model_extra["ragmesh"]` in Python).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmeshd.openai_compat.sources import source_list

# The model id `GET /v1/models` lists for chat completions: the coordinator's retrieval-augmented
# answer (whichever language model it routes to is named in the response's `model`).
CHAT_MODEL = "ragmesh-rag"
OWNER = "ragmesh"
ENCODING_FORMATS = ("float", "base64")
_MODES = {
    "dense": search_pb.SEARCH_MODE_DENSE,
    "keyword": search_pb.SEARCH_MODE_KEYWORD,
    "hybrid": search_pb.SEARCH_MODE_HYBRID,
}
_DECISIONS = {
    "local": coordinator_pb.DECISION_LOCAL,
    "remote": coordinator_pb.DECISION_REMOTE,
    "none": coordinator_pb.DECISION_NONE,
}

# gRPC status -> HTTP status and OpenAI error type, for an error the backend returned.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}


@dataclass
class ApiError(Exception):
    """An error answered as OpenAI's `{"error": {...}}` with an HTTP status; `grpc_status` is
    the backend's status name (OK when the adapter itself refused the request)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    grpc_status: str = "INVALID_ARGUMENT"

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
                "grpc_status": self.grpc_status,
            }
        }


def from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> ApiError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    status, kind = _HTTP_STATUS.get(code, (500, "server_error"))
    details = error.details() if hasattr(error, "details") else None
    return ApiError(
        status, details or code.name, kind, code=code.name.lower(), grpc_status=code.name
    )


def invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


# --- embeddings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingsCall:
    inputs: list[str]
    model: str
    encoding_format: str
    dimensions: int | None


def parse_embeddings(body: Any) -> EmbeddingsCall:
    """Validate an embeddings request body; token-id inputs are refused (ragmesh embeds text)."""
    body = _object(body)
    raw = body.get("input")
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        inputs = list(raw)
    elif isinstance(raw, list) and raw:
        raise invalid("input must be text: token-id inputs are not supported", "input")
    else:
        raise invalid("input must be a non-empty string or list of strings", "input")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required: GET /v1/models lists the embedding model", "model")
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise invalid(f"encoding_format must be one of {list(ENCODING_FORMATS)}", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
        raise invalid("dimensions must be a positive integer", "dimensions")
    return EmbeddingsCall(inputs, model, encoding_format, dimensions)


def encode_vector(values: Sequence[float], encoding_format: str) -> list[float] | str:
    """A vector as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")
    return [float(value) for value in values]


def embeddings_response(reply: embeddings_pb.EmbedResponse, encoding_format: str) -> dict[str, Any]:
    tokens = sum(embedding.token_count for embedding in reply.embeddings)
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": index,
                "embedding": encode_vector(embedding.values, encoding_format),
            }
            for index, embedding in enumerate(reply.embeddings)
        ],
        "model": reply.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# --- models -----------------------------------------------------------------------------------


def model_object(model_id: str, created: int = 0) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


def models_response(embedding_model: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [model_object(embedding_model), model_object(CHAT_MODEL)],
    }


# --- chat completions -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatCall:
    request: coordinator_pb.AskRequest
    model: str
    stream: bool
    include_usage: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)


def parse_chat(body: Any) -> ChatCall:
    """The last user message is the query. Retrieval options come from the `ragmesh` extra
    field: collections, top_k, max_context_tokens, mode (dense|keyword|hybrid) and force
    (local|remote|none)."""
    body = _object(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required: GET /v1/models lists it", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list", "messages")
    query = _last_user_text(messages)
    request = coordinator_pb.AskRequest(query=query)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise invalid("max_tokens must be a positive integer", "max_tokens")
        request.max_answer_tokens = max_tokens
    n = body.get("n", 1)
    if n not in (1, None):
        raise invalid("n must be 1: ragmesh answers once per request", "n")
    options = body.get("ragmesh", {})
    if not isinstance(options, dict):
        raise invalid("ragmesh must be an object", "ragmesh")
    _apply_options(request, options)
    stream = bool(body.get("stream", False))
    stream_options = body.get("stream_options") or {}
    include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
    return ChatCall(request, model, stream, include_usage, options)


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [
                    part.get("text", "")
                    for part in content
                    if isinstance(part, dict) and part.get("type") == "text"
                ]
                if texts:
                    return "\n".join(texts)
            raise invalid("the last user message must have text content", "messages")
    raise invalid("messages must contain a user message (the query)", "messages")


def _apply_options(request: coordinator_pb.AskRequest, options: Mapping[str, Any]) -> None:
    known = {"collections", "top_k", "max_context_tokens", "mode", "force"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise invalid(f"unknown ragmesh option(s) {unknown}; known: {sorted(known)}", "ragmesh")
    collections = options.get("collections", [])
    if not isinstance(collections, list) or not all(isinstance(c, str) for c in collections):
        raise invalid("ragmesh.collections must be a list of names", "ragmesh.collections")
    request.collections.extend(collections)
    for name in ("top_k", "max_context_tokens"):
        value = options.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise invalid(f"ragmesh.{name} must be an integer", f"ragmesh.{name}")
            setattr(request, name, value)
    mode = options.get("mode")
    if mode is not None:
        if mode not in _MODES:
            raise invalid(f"ragmesh.mode must be one of {sorted(_MODES)}", "ragmesh.mode")
        request.mode = _MODES[mode]
    force = options.get("force")
    if force is not None:
        if force not in _DECISIONS:
            raise invalid(f"ragmesh.force must be one of {sorted(_DECISIONS)}", "ragmesh.force")
        request.force = _DECISIONS[force]


def completion_id(interaction_id: str) -> str:
    return f"chatcmpl-{interaction_id}" if interaction_id else "chatcmpl-ragmesh"


def summary_extra(
    summary: coordinator_pb.AskSummary, sources: coordinator_pb.AnswerSources | None = None
) -> dict[str, Any]:
    """The `ragmesh` extra field: the stored interaction, routing and the answer's sources."""
    return {
        "interaction_id": summary.interaction_id,
        "decision": _decision_name(summary.decision),
        "answered_by": _decision_name(summary.answered_by),
        "reason": summary.reason,
        "fallback": summary.fallback,
        "fallback_reason": summary.fallback_reason,
        "confidence": summary.confidence,
        "sources": source_list(summary, sources),
    }


def _decision_name(decision: int) -> str:
    return str(coordinator_pb.Decision.Name(decision)).removeprefix("DECISION_").lower()


def usage(summary: coordinator_pb.AskSummary, answer: str) -> dict[str, int]:
    """Token counts as ragmesh knows them: the context's (embedding tokenizer) and a rough
    count of the answer's words; the language model's own counts are not passed back."""
    prompt = sum(passage.token_count for passage in summary.passages)
    completion = len(answer.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat_response(
    summary: coordinator_pb.AskSummary,
    answer: str,
    requested_model: str,
    created: int,
    sources: coordinator_pb.AnswerSources | None = None,
) -> dict[str, Any]:
    return {
        "id": completion_id(summary.interaction_id),
        "object": "chat.completion",
        "created": created,
        "model": summary.model or requested_model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage(summary, answer),
        "ragmesh": summary_extra(summary, sources),
    }


def chat_chunk(
    chunk_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if extra is not None:
        body["ragmesh"] = extra
    return body


def now() -> int:
    return int(time.time())


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body
