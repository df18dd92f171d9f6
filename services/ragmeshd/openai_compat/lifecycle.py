"""The adapter's process life on Kubernetes as under `up`: a drain before it stops, a plaintext
health port for the kubelet, and a renewed (cert-manager) certificate served without a restart.

    health = Health()
    server = DrainingServer(config, health, drain_s=settings.server.shutdown_drain_s)
    probes = health_server(health, settings.openai.health_listen)   # None when not set

A gRPC server drains by answering NOT_SERVING before it stops; this does the same for HTTP:
on the first SIGTERM /healthz answers 503 (Envoy's HTTP health check takes the replica out of
rotation, the kubelet's readiness probe takes the pod out of its Service) while calls keep
being served, and only after `drain_s` does uvicorn stop taking connections and wait for the
open ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Generator
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ragmeshd.runtime.tls_reload import CertificateFiles

_log = logging.getLogger("ragmesh.openai")

HEALTH_PATH = "/healthz"
LIVENESS_PATH = "/livez"


class Health:
    """Serving until the process is asked to stop."""

    def __init__(self) -> None:
        self.serving = True

    async def readiness(self, _request: Request) -> Response:
        if self.serving:
            return JSONResponse({"status": "serving"})
        return JSONResponse({"status": "draining"}, status_code=503)

    async def liveness(self, _request: Request) -> Response:
        return JSONResponse({"status": "alive"})


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain of `drain_s` between the first stop signal and the stop."""

    def __init__(self, config: uvicorn.Config, health: Health, *, drain_s: float) -> None:
        super().__init__(config)
        self._health = health
        self._drain_s = drain_s
        self._stop_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._stop_at is not None or self._drain_s <= 0:
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        self._health.serving = False
        self._stop_at = time.monotonic() + self._drain_s
        _log.info("draining", extra={"drain_s": self._drain_s})

    async def on_tick(self, counter: int) -> bool:
        # uvicorn's main loop ticks every 0.1 s.
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)


class _NoSignals(uvicorn.Server):
    """A second uvicorn server in the process: the main one owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def health_server(health: Health, listen: str) -> uvicorn.Server | None:
    """The plaintext probe port (GET /healthz, GET /livez only), or None when `listen` is ""."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    app = Starlette(
        routes=[
            Route(HEALTH_PATH, health.readiness, methods=["GET"]),
            Route(LIVENESS_PATH, health.liveness, methods=["GET"]),
        ]
    )
    config = uvicorn.Config(
        app, host=host.strip("[]"), port=int(port), log_config=None, access_log=False,
        lifespan="off",
    )  # fmt: skip
    return _NoSignals(config)


async def reload_certificate(
    context: ssl.SSLContext, cert: Path, key: Path, ca: Path, interval_s: float
) -> None:
    """Load a renewed certificate and key into `context` (new connections get them; open ones
    keep theirs) when the files change, checked every `interval_s`; runs until cancelled.

    CertificateFiles reports a change only once both halves of the pair match again, so a
    renewal written file by file never leaves the context with a mismatched pair."""
    files = CertificateFiles(cert, key, ca)
    files.initial()
    while True:
        await asyncio.sleep(interval_s)
        if files.fetch() is None:
            continue
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as error:
            # Replaced again between the check and the load: the next round sees it.
            _log.warning("certificate not reloaded yet: %s", error)
            continue
        _log.info("certificate reloaded", extra={"serial": f"{files.serial:x}"})
