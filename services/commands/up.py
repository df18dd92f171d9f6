"""`ragmesh up`: start the mesh in dependency order, print how to call it, stop on Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from services.config import Settings, load_settings
from services.embeddings.server import SERVICE_NAME as EMBEDDINGS_SERVICE
from services.mesh.layout import MeshLayout, grpcurl_path, layout_for, ragmesh_argv
from services.mesh.supervisor import ProcessSpec, StartupFailedError, Supervisor
from services.runtime.health_client import SERVING, check_health
from services.runtime.logs import configure_logging

# The whole mesh gets this long to become healthy before `up` gives up.
STARTUP_TIMEOUT_S = 180.0

_log = logging.getLogger("ragmesh.up")


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser(
        "up",
        help="start the mesh in the foreground (Ctrl-C stops it)",
        description="Start every ragmesh service in dependency order, waiting on each one's"
        " gRPC health, then print the endpoint and a grpcurl command. Logs go to"
        " STATE_DIR/logs/. Ctrl-C or SIGTERM stops everything gracefully.",
    )
    up.add_argument(
        "--timeout", type=float, default=STARTUP_TIMEOUT_S, help="seconds to wait for health"
    )
    up.set_defaults(handler=_up)


def _up(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging("up", settings.log_level)
    return asyncio.run(run_mesh(settings, args.timeout))


def _health_probe(target: str, service: str) -> Callable[[], Awaitable[bool]]:
    async def is_serving() -> bool:
        return await check_health(target, service) == SERVING

    return is_serving


def mesh_specs(settings: Settings, layout: MeshLayout) -> list[ProcessSpec]:
    """The processes of the mesh, in start order."""
    embeddings_target = settings.embeddings.listen
    return [
        ProcessSpec(
            name="embeddings",
            argv=ragmesh_argv("serve", "embeddings"),
            log_path=layout.log_path("embeddings"),
            is_ready=_health_probe(embeddings_target, EMBEDDINGS_SERVICE),
        ),
    ]


def banner(settings: Settings, layout: MeshLayout) -> str:
    target = settings.embeddings.listen
    grpcurl = grpcurl_path()
    return "\n".join(
        [
            "",
            "ragmesh is up.",
            f"  embeddings  {target}  ({EMBEDDINGS_SERVICE})",
            f"  logs        {layout.logs_dir}/",
            "",
            "Try it:",
            f"  {grpcurl} -plaintext {target} list",
            f'  {grpcurl} -plaintext -d \'{{"inputs": ["hello mesh"]}}\' {target}'
            f" {EMBEDDINGS_SERVICE}/Embed",
            "",
            "Ctrl-C stops everything.",
            "",
        ]
    )


async def run_mesh(settings: Settings, timeout_s: float) -> int:
    layout = layout_for(settings)
    supervisor = Supervisor()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    starting = asyncio.ensure_future(
        supervisor.start_in_order(mesh_specs(settings, layout), timeout_s)
    )
    stop_wait = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            print(banner(settings, layout), flush=True)
            await stop_wait
        else:
            starting.cancel()
        return 0
    except StartupFailedError as exc:
        _log.error("start-up failed: %s", exc)
        print(f"\nragmesh up failed: {exc}\n", flush=True)
        return 1
    finally:
        stop_wait.cancel()
        await supervisor.stop_all()
