"""Calling any RPC of the API through Envoy with bytes: typed messages serialised by the test,
or bytes that are no valid message at all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import Descriptor, MethodDescriptor

from ragmeshd.runtime.api import API_FILES


@dataclass(frozen=True)
class Rpc:
    path: str
    input_type: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]


def _rpc(method: MethodDescriptor) -> Rpc:
    return Rpc(
        path=f"/{method.containing_service.full_name}/{method.name}",
        input_type=method.input_type,
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
    )


# Every RPC of every ragmesh service.
RPCS = [
    _rpc(method)
    for file in API_FILES
    for service in file.services_by_name.values()
    for method in service.methods
]


class RawClient:
    """One channel through Envoy with the client certificate and an API key."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials, api_key: str) -> None:
        self._channel = grpc.secure_channel(target, credentials)
        self._metadata = (("authorization", f"Bearer {api_key}"),)

    def close(self) -> None:
        self._channel.close()

    def call(
        self, rpc: Rpc, payload: bytes | Sequence[bytes], timeout_s: float
    ) -> tuple[grpc.StatusCode, str]:
        """Send `payload` (a list of messages for a client stream), read every answer, and
        return the final status code and message."""
        try:
            if rpc.client_streaming:
                messages = [payload] if isinstance(payload, bytes) else list(payload)
                stream = self._channel.stream_stream(rpc.path)
                for _ in stream(iter(messages), timeout=timeout_s, metadata=self._metadata):
                    pass
            elif rpc.server_streaming:
                assert isinstance(payload, bytes)
                responses = self._channel.unary_stream(rpc.path)
                for _ in responses(payload, timeout=timeout_s, metadata=self._metadata):
                    pass
            else:
                assert isinstance(payload, bytes)
                unary = self._channel.unary_unary(rpc.path)
                unary(payload, timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""  # type: ignore[attr-defined]
        return grpc.StatusCode.OK, ""
