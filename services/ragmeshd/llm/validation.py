"""Checks of a GenerateRequest against the server's limits; a failure names the limit."""

from __future__ import annotations

from ragmesh.llm.v1 import llm_service_pb2 as pb
from ragmeshd.llm.records import ChatTurn, GenerationParams
from ragmeshd.settings.llm import LlmSettings

_ROLES = {
    pb.MESSAGE_ROLE_SYSTEM: "system",
    pb.MESSAGE_ROLE_USER: "user",
    pb.MESSAGE_ROLE_ASSISTANT: "assistant",
}


class InvalidRequestError(ValueError):
    """The request breaks a rule; the message says which and how to fix it."""


def check_generate(
    request: pb.GenerateRequest, settings: LlmSettings
) -> tuple[list[ChatTurn], GenerationParams]:
    """The conversation and generation parameters of a valid request."""
    messages = request.messages
    if not messages:
        raise InvalidRequestError("messages is empty: send at least one user message")
    if len(messages) > settings.max_messages:
        raise InvalidRequestError(
            f"{len(messages)} messages is more than the limit of {settings.max_messages}"
            " (llm.max_messages)"
        )
    turns = []
    for index, message in enumerate(messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise InvalidRequestError(
                f"messages[{index}].role is unset or unknown: use SYSTEM, USER or ASSISTANT"
            )
        if role == "system" and index != 0:
            raise InvalidRequestError(f"messages[{index}]: a system message may only come first")
        if not message.content.strip():
            raise InvalidRequestError(f"messages[{index}].content is empty")
        if len(message.content) > settings.max_message_chars:
            raise InvalidRequestError(
                f"messages[{index}].content has {len(message.content)} characters, more than"
                f" the limit of {settings.max_message_chars} (llm.max_message_chars)"
            )
        turns.append(ChatTurn(role, message.content))
    if turns[-1].role != "user":
        raise InvalidRequestError("the last message must come from the user")

    max_tokens = request.max_tokens or settings.default_max_tokens
    if not 1 <= max_tokens <= settings.max_tokens_limit:
        raise InvalidRequestError(
            f"max_tokens must be 1 to {settings.max_tokens_limit} (llm.max_tokens_limit), or 0"
            f" for the default of {settings.default_max_tokens}; got {request.max_tokens}"
        )
    temperature = (
        request.temperature if request.HasField("temperature") else settings.default_temperature
    )
    if not 0 <= temperature <= 2:
        raise InvalidRequestError(f"temperature must be 0 to 2; got {temperature}")
    stops = list(request.stop_sequences)
    if len(stops) > settings.max_stop_sequences:
        raise InvalidRequestError(
            f"{len(stops)} stop sequences is more than the limit of"
            f" {settings.max_stop_sequences} (llm.max_stop_sequences)"
        )
    for index, stop in enumerate(stops):
        if not 1 <= len(stop) <= settings.max_stop_sequence_chars:
            raise InvalidRequestError(
                f"stop_sequences[{index}] must be 1 to {settings.max_stop_sequence_chars}"
                " characters long (llm.max_stop_sequence_chars)"
            )
    seed = request.seed if request.HasField("seed") else None
    return turns, GenerationParams(
        max_tokens=max_tokens, temperature=temperature, stop=tuple(stops), seed=seed
    )
