"""The lifecycle every ragmesh gRPC server shares.

    server = service_server(settings, "search", health_names=[...])  # a GrpcServer
    add_FooServicer_to_server(servicer, server.grpc)
    await server.start()                # accepts connections at once, NOT_SERVING
    exit_code = await server.run(ready) # `ready` loads dependencies, then SERVING

`run` returns when SIGTERM/SIGINT arrives (graceful: NOT_SERVING, drain, finish in-flight
calls, stop) or when `ready` fails (the failure is logged and the exit code is 1).

    server.watch(monitor.start(), "store monitor")

A watched background task the server cannot work without (a dependency monitor, a batch
loop) that ends while the server runs turns it NOT_SERVING at once and stops it with exit
code 1: Envoy routes around it, and `ragmesh up` starts a fresh one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ragmeshd.runtime.admission import AdmissionInterceptor
from ragmeshd.runtime.api import api_service_names
from ragmeshd.runtime.auth import api_key_interceptor
from ragmeshd.runtime.interceptors import server_interceptors
from ragmeshd.runtime.metrics import serve_metrics
from ragmeshd.runtime.tls import server_credentials_for
from ragmeshd.runtime.tracing import configure_tracing, shutdown_tracing
from ragmeshd.settings import ServerSettings, Settings

_log = logging.getLogger("ragmesh.server")

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# The health name a liveness probe asks for: SERVING from start to shutdown, whatever the
# readiness of the service's dependencies.
LIVENESS_SERVICE = "ragmesh.liveness"


class StartupError(Exception):
    """A dependency could not be made ready; the message says which and why."""


class GrpcServer:
    """A grpc.aio server with health, reflection, interceptors and graceful shutdown."""

    def __init__(
        self,
        name: str,
        listen: str,
        settings: ServerSettings,
        *,
        health_names: Sequence[str],
        credentials: grpc.ServerCredentials | None = None,
        authentication: grpc.aio.ServerInterceptor | None = None,
        metrics_listen: str = "",
        health_listen: str = "",
    ) -> None:
        self.name = name
        self._listen = listen
        self._settings = settings
        self._credentials = credentials
        self._metrics_listen = metrics_listen
        # "" is the whole server's health, as grpc.health.v1 defines it.
        self._health_names = ["", *health_names]
        self.health = health.aio.HealthServicer()
        self.admission = AdmissionInterceptor(settings.max_concurrent_rpcs)
        self.grpc = grpc.aio.server(
            interceptors=server_interceptors(authentication, self.admission),
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            [*api_service_names(), health.SERVICE_NAME, reflection.SERVICE_NAME], self.grpc
        )
        self._stopping: list[Callable[[], Awaitable[None]]] = []
        self.port = 0
        self._health_listen = health_listen
        self._health_only: grpc.aio.Server | None = None
        # Set by a stop signal or a watched task that ended; `run` then shuts down.
        self._stop = asyncio.Event()
        self._exit_code = 0
        self._shutting_down = False
        self._background: set[asyncio.Future[Any]] = set()

    def on_stopped(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` after the server has stopped taking calls (e.g. drain a batcher)."""
        self._stopping.append(hook)

    async def start(self) -> None:
        """Bind and start serving; every service reports NOT_SERVING until `set_serving`."""
        for service_name in self._health_names:
            await self.health.set(service_name, _NOT_SERVING)
        if self._credentials is None:
            self.port = self.grpc.add_insecure_port(self._listen)
        else:
            self.port = self.grpc.add_secure_port(self._listen, self._credentials)
        if self.port == 0 and not self._listen.startswith("unix:"):
            raise StartupError(f"could not listen on {self._listen}")
        await self.grpc.start()
        await self._start_health_only()
        serve_metrics(self._metrics_listen)
        _log.info(
            "listening",
            extra={"listen": self._listen, "port": self.port, "tls": self._credentials is not None},
        )

    async def _start_health_only(self) -> None:
        """The plaintext health-only port for kubelet's probes, sharing this server's health
        statuses. LIVENESS_SERVICE is SERVING for as long as the process serves at all, so a
        liveness probe does not fail while the model loads (the startup probe covers that)."""
        if not self._health_listen:
            return
        self._health_only = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_only)
        if self._health_only.add_insecure_port(self._health_listen) == 0:
            raise StartupError(f"could not listen on {self._health_listen} (health port)")
        await self.health.set(LIVENESS_SERVICE, _SERVING)
        await self._health_only.start()

    def watch(self, task: asyncio.Future[Any], what: str, *, may_finish: bool = False) -> None:
        """`task` must run as long as the server does (or, with `may_finish`, must not
        fail); if it ends first, the server turns NOT_SERVING and stops with exit code 1."""
        task.add_done_callback(functools.partial(self._watched_task_ended, what, may_finish))

    def _watched_task_ended(self, what: str, may_finish: bool, task: asyncio.Future[Any]) -> None:
        if self._shutting_down:
            return
        error = None if task.cancelled() else task.exception()
        if may_finish and error is None and not task.cancelled():
            return
        _log.error(
            "a background task the server needs stopped; NOT_SERVING, stopping",
            extra={"task": what, "error": repr(error) if error else "it returned"},
            exc_info=error,
        )
        self._exit_code = 1
        turning = asyncio.ensure_future(self.set_serving(False))
        self._background.add(turning)
        turning.add_done_callback(self._background.discard)
        self._stop.set()

    async def set_serving(self, serving: bool) -> None:
        status = _SERVING if serving else _NOT_SERVING
        for service_name in self._health_names:
            await self.health.set(service_name, status)
        _log.info("health changed", extra={"serving": serving})

    async def run(self, ready: Awaitable[None]) -> int:
        """Serve until a stop signal; returns the process exit code."""
        stop = self._stop
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        readiness = asyncio.ensure_future(ready)
        stop_wait = asyncio.ensure_future(stop.wait())
        await asyncio.wait({readiness, stop_wait}, return_when=asyncio.FIRST_COMPLETED)

        if readiness.done() and readiness.exception() is not None:
            error = readiness.exception()
            _log.error("start-up failed: %s", error, exc_info=error)
            self._exit_code = 1
        elif readiness.done():
            if not stop.is_set():  # a watched task may already have failed
                await self.set_serving(True)
            await stop_wait
        else:
            readiness.cancel()
        stop_wait.cancel()

        await self.shutdown()
        return self._exit_code

    async def shutdown(self) -> None:
        """NOT_SERVING, give the proxy time to notice, finish in-flight calls, stop."""
        self._shutting_down = True
        _log.info("shutting down", extra={"drain_s": self._settings.shutdown_drain_s})
        await self.health.enter_graceful_shutdown()
        if self._settings.shutdown_drain_s:
            await asyncio.sleep(self._settings.shutdown_drain_s)
        await self.grpc.stop(self._settings.shutdown_grace_s)
        if self._health_only is not None:
            await self._health_only.stop(0)
        for hook in self._stopping:
            await hook()
        await shutdown_tracing()
        _log.info("stopped")


def call_timeout(context: grpc.aio.ServicerContext, default_s: float) -> float:
    """The time this call may still take: its deadline, or `default_s` when it has none."""
    remaining = context.time_remaining()
    return default_s if remaining is None else max(remaining, 0.0)


def service_server(settings: Settings, service: str, health_names: Sequence[str]) -> GrpcServer:
    """The GrpcServer of a mesh service, as its settings describe it: its listen address,
    mTLS when the mesh runs with TLS, API keys, and its /metrics address."""
    configure_tracing(service, settings)
    section = getattr(settings, service)
    # Under mTLS a replica admits only Envoy's and the services' certificates (issue 10).
    authentication = api_key_interceptor(
        settings.state_dir, settings.server.require_api_key, mesh_peers_only=settings.mesh.tls
    )
    return GrpcServer(
        service,
        section.listen,
        settings.server,
        health_names=health_names,
        credentials=server_credentials_for(settings, service),
        authentication=authentication,
        metrics_listen=section.metrics_listen,
        health_listen=settings.server.health_listen,
    )
