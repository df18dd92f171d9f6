"""Channels from one ragmesh service to another, carrying the caller's key and request id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from ragmeshd.runtime.client_tls import ReloadingChannel, ReloadingChannelCredentials
from ragmeshd.runtime.context import REQUEST_ID_HEADER, request_id
from ragmeshd.runtime.keystore import KeyStore
from ragmeshd.settings import Settings
from ragmeshd.state import MeshLayout


class _OutgoingMetadata:
    """Adds `authorization: Bearer <key>` and the current `x-request-id` to a call."""

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if self._api_key and "authorization" not in metadata:
            metadata.add("authorization", f"Bearer {self._api_key}")
        current = request_id.get()
        if current and REQUEST_ID_HEADER not in metadata:
            metadata.add(REQUEST_ID_HEADER, current)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files an interceptor under the first call kind it implements, so each kind needs
# an object of its own.
class _UnaryUnary(_OutgoingMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_OutgoingMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_OutgoingMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_OutgoingMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def metadata_interceptors(api_key: str | None) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that send `api_key` and the request id on every kind of call."""
    return [kind(api_key) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


def service_api_key(settings: Settings, service: str) -> str:
    """The key `service` presents to the services it calls (made on first use)."""
    store = KeyStore(MeshLayout(settings.state_dir).keys_dir)
    return store.ensure_named_key(f"service-{service}").read_text().strip()


def outgoing_interceptors(settings: Settings, service: str) -> list[grpc.aio.ClientInterceptor]:
    """What every channel `service` opens to another service needs, outermost first."""
    return metadata_interceptors(service_api_key(settings, service))


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A secure channel when credentials are given, else a plaintext one (loopback only).
    Credentials read from certificate files (ReloadingChannelCredentials, what
    tls.caller_credentials_for gives) make a channel that follows their renewal."""
    if isinstance(credentials, ReloadingChannelCredentials):
        return ReloadingChannel(target, credentials, options, interceptors)
    if credentials is not None:
        return grpc.aio.secure_channel(
            target, credentials, options=list(options), interceptors=list(interceptors)
        )
    return grpc.aio.insecure_channel(target, options=list(options), interceptors=list(interceptors))
