"""Client channels that follow renewed client-certificate files.

    credentials = ReloadingChannelCredentials(cert, key, ca)
    channel = open_channel(target, credentials, ...)   # a ReloadingChannel (runtime/channels.py)

A gRPC channel's credentials are fixed when it is made, so a service that called through
Envoy with the certificate it started with would keep presenting it after cert-manager renewed
it (and, once it expired, lose every call while its own health stayed SERVING). Before each
call a ReloadingChannel looks at the three files (a `stat` each: cheap next to a call); when
one changed, as the kubelet's atomic swap of a mounted Secret's `..data` link or `ragmesh certs
renew` changes them, and the certificate and key on disk match again, it opens a new channel
with them for every call from then on and closes the old one once its calls in flight are done
(at most RETIRE_GRACE_S later). A half-replaced pair keeps the current channel: the next call
looks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from ragmeshd.runtime.tls_reload import load_pair, read_matching_pair

_log = logging.getLogger("ragmesh.tls")

# How long calls in flight on a channel whose certificate was replaced may still run on it.
# The old certificate stays valid long after its renewal (cert-manager renews at 2/3 of its
# life), so this only bounds how long the old connections linger.
RETIRE_GRACE_S = 300.0

# (inode, modification time, size) of each file: any replacement changes at least one.
Version = tuple[tuple[int, int, int], ...]


def _credentials(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


class ReloadingChannelCredentials(grpc.ChannelCredentials):
    """mTLS channel credentials from files, usable as plain credentials (the files as they
    were when made) and, through open_channel, as a channel that follows the files."""

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        self.paths = (cert, key, ca)
        version = self.stat()
        cert_pem, key_pem = read_matching_pair(cert, key)
        initial = _credentials(ca.read_bytes(), cert_pem, key_pem)
        super().__init__(initial._credentials)
        self._latest: tuple[Version, grpc.ChannelCredentials] = (version, initial)

    def stat(self) -> Version:
        stats = [os.stat(path) for path in self.paths]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def newer_than(self, version: Version) -> tuple[Version, grpc.ChannelCredentials] | None:
        """Credentials from the files when they changed since `version` and the pair on disk
        matches; None to keep what `version` was made from."""
        try:
            current = self.stat()
            if current == version:
                return None
            if current == self._latest[0]:
                return self._latest  # another channel with these credentials read them already
            cert, key, ca = self.paths
            pair = load_pair(cert, key)
            ca_pem = ca.read_bytes()
            if pair is None or self.stat() != current:
                return None  # half replaced, or changing while read: look at the next call
        except (OSError, ValueError) as error:
            _log.warning("client certificate files not reloaded yet: %s", error)
            return None
        self._latest = (current, _credentials(ca_pem, pair[0], pair[1]))
        _log.info("client certificate reloaded", extra={"serial": f"{pair[2].serial_number:x}"})
        return self._latest

    @property
    def latest(self) -> tuple[Version, grpc.ChannelCredentials]:
        return self._latest


class _Reloading:
    """A multi-callable that makes each call on the channel's current connection."""

    def __init__(self, owner: ReloadingChannel, kind: str, method: str, kwargs: dict[str, Any]):
        self._owner, self._kind, self._method, self._kwargs = owner, kind, method, kwargs
        self._bound: tuple[grpc.aio.Channel | None, Any] = (None, None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        if self._bound[0] is not channel:
            self._bound = (channel, getattr(channel, self._kind)(self._method, **self._kwargs))
        return self._bound[1](*args, **kwargs)


class ReloadingChannel(grpc.aio.Channel):
    """A grpc.aio channel that reopens itself with renewed client-certificate files."""

    def __init__(
        self,
        target: str,
        credentials: ReloadingChannelCredentials,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._target, self._credentials = target, credentials
        self._options, self._interceptors = list(options), list(interceptors)
        self._version, initial = credentials.latest
        self._channel = self._open(initial)
        # Channels whose certificate was replaced, closing once their calls are done.
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        self.reopened = 0  # how many times a renewal replaced the channel

    def _open(self, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            self._target, credentials, options=self._options, interceptors=self._interceptors
        )

    def current(self) -> grpc.aio.Channel:
        """The channel for the next call: a new one when the files were renewed."""
        renewed = self._credentials.newer_than(self._version)
        if renewed is not None:
            self._version, credentials = renewed
            old, self._channel = self._channel, self._open(credentials)
            self.reopened += 1
            task = asyncio.get_running_loop().create_task(old.close(RETIRE_GRACE_S))
            self._retiring[task] = old
            task.add_done_callback(self._retired)
        return self._channel

    def _retired(self, task: asyncio.Task[None]) -> None:
        self._retiring.pop(task, None)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Reloading(self, "unary_unary", method, _named(args, kwargs))

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Reloading(self, "unary_stream", method, _named(args, kwargs))

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Reloading(self, "stream_unary", method, _named(args, kwargs))

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Reloading(self, "stream_stream", method, _named(args, kwargs))

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        """Close the channel and any it replaced, each with `grace` for its calls."""
        retiring = list(self._retiring.items())
        for task, _ in retiring:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, old in retiring:
            await old.close(grace)
        await self._channel.close(grace)

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_POSITIONAL = ("request_serializer", "response_deserializer", "_registered_method")


def _named(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**dict(zip(_POSITIONAL, args, strict=False)), **kwargs}
