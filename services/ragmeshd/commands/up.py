"""`ragmesh up`: start the mesh in dependency order, print how to call it, stop on Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from ragmeshd.commands.background import pid_file, running_pid, start_detached
from ragmeshd.commands.convention import (
    EXIT_USAGE,
    CommandError,
    parse_duration,
    settings_or_exit,
)
from ragmeshd.pki.certs import CertificateError
from ragmeshd.runtime.logs import configure_logging
from ragmeshd.runtime.private_files import forbid_inspection
from ragmeshd.settings import Settings
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.launcher import MeshLauncher
from ragmeshd.supervisor.plan import check_replicas, parse_replicas
from ragmeshd.supervisor.processes import CrashLoopError, StartupFailedError

# The whole mesh gets this long to become healthy before `up` gives up.
STARTUP_TIMEOUT_S = 180.0

_log = logging.getLogger("ragmesh.up")


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser(
        "up",
        help="start the whole mesh in the foreground (Ctrl-C stops it)",
        description="Create the CA and certificates on first start, then start every ragmesh"
        " service in dependency order (PostgreSQL, embeddings, search, llm, coordinator, Envoy),"
        " waiting on each one's health, and print the endpoint and a grpcurl command that"
        " works as printed. A process that exits is started again (backoff 1 s doubling to"
        " 30 s); 5 exits of one within 2 minutes stop the mesh with exit code 1. Logs go to"
        " STATE_DIR/logs/. Ctrl-C or SIGTERM stops everything gracefully.",
    )
    up.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="run N processes of SERVICE behind one Envoy cluster (repeatable)",
    )
    up.add_argument(
        "--timeout",
        type=parse_duration,
        default=STARTUP_TIMEOUT_S,
        metavar="DURATION",
        help=f"how long the mesh may take to become healthy (default {STARTUP_TIMEOUT_S:.0f}s)",
    )
    up.add_argument(
        "--detach",
        action="store_true",
        help="run in the background: return once the mesh is healthy; output in"
        " STATE_DIR/logs/up.log, stop it with `ragmesh down`",
    )
    up.add_argument(
        "--llm",
        default="local",
        metavar="local|none|URL",
        help="who answers Ask: local (default) runs the llm service (SmolLM2-135M through"
        " llama.cpp) as the LOCAL route; none runs no model (answers are the retrieved"
        " context); a URL is an OpenAI-compatible API (Ollama, vLLM, llama.cpp's server, a"
        " hosted one) used as the REMOTE route, e.g. http://127.0.0.1:11434/v1",
    )
    up.add_argument(
        "--llm-api-key-file",
        default="",
        metavar="FILE",
        help="a file holding the API key of --llm URL (sent as a bearer token)",
    )
    up.set_defaults(handler=_up)


def llm_choice(value: str, api_key_file: str) -> tuple[bool, str, str]:
    """(run the llm service, the REMOTE URL, its key file's absolute path) for `--llm` and
    `--llm-api-key-file`; ValueError for anything else."""
    if api_key_file and not value.startswith(("http://", "https://")):
        raise ValueError("--llm-api-key-file goes with --llm URL")
    if api_key_file and not Path(api_key_file).is_file():
        raise ValueError(f"--llm-api-key-file {api_key_file}: no such file")
    key_file = str(Path(api_key_file).resolve()) if api_key_file else ""
    if value == "local":
        return True, "", ""
    if value == "none":
        return False, "", ""
    if value.startswith(("http://", "https://")):
        return False, value, key_file
    raise ValueError(f"--llm {value!r}: use local, none, or an http(s):// URL")


def _up(args: argparse.Namespace) -> int:
    if args.detach:
        up_args = [arg for pair in (("--replicas", r) for r in args.replicas) for arg in pair]
        llm_args = ["--llm", args.llm]
        if args.llm_api_key_file:
            llm_args += ["--llm-api-key-file", str(Path(args.llm_api_key_file).resolve())]
        return start_detached([*up_args, *llm_args, "--timeout", f"{args.timeout}s"], args.timeout)
    # `up` holds the CA key's passphrase while it issues certificates: the services it starts
    # (same OS user) must not read it from its /proc/<pid>/environ or memory.
    forbid_inspection()
    settings = settings_or_exit()
    configure_logging("up", settings.log_level, settings.state_dir)
    try:
        counts = parse_replicas(args.replicas)
        check_replicas(settings, counts)
        run_llm, llm_url, llm_key_file = llm_choice(args.llm, args.llm_api_key_file)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    if not run_llm:
        counts["llm"] = 0
    # `ragmesh down` finds this process by its pid file, detached or not.
    layout = MeshLayout(settings.state_dir)
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    pid_file(layout).write_text(f"{os.getpid()}\n")
    try:
        return asyncio.run(
            run_mesh(settings, counts, args.timeout, llm_url=llm_url, llm_api_key_file=llm_key_file)
        )
    finally:
        if running_pid(layout) in (None, os.getpid()):
            pid_file(layout).unlink(missing_ok=True)


async def run_mesh(
    settings: Settings,
    counts: dict[str, int],
    timeout_s: float,
    *,
    llm_url: str = "",
    llm_api_key_file: str = "",
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    try:
        launcher = MeshLauncher(
            settings,
            MeshLayout(settings.state_dir),
            counts,
            llm_url=llm_url,
            llm_api_key_file=llm_api_key_file,
        )
    except CertificateError as exc:
        print(f"\nragmesh up: certificate problem: {exc}\n", file=sys.stderr, flush=True)
        return 1
    starting = asyncio.ensure_future(launcher.start(timeout_s))
    stop_wait = asyncio.ensure_future(stop.wait())
    supervising: asyncio.Future[None] | None = None
    try:
        await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            return 0
        starting.result()
        print(launcher.banner(), flush=True)
        # Runs until a crash loop; a stop signal ends the wait instead.
        supervising = asyncio.ensure_future(launcher.supervisor.supervise())
        await asyncio.wait({supervising, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if supervising.done():
            supervising.result()
        return 0
    except StartupFailedError as exc:
        _log.error("start-up failed", extra={"error": str(exc)})
        print(f"\nragmesh up failed: {exc}\n", file=sys.stderr, flush=True)
        return 1
    except CrashLoopError as exc:
        print(f"\nragmesh up: stopping the mesh: {exc}\n", file=sys.stderr, flush=True)
        return 1
    finally:
        stop_wait.cancel()
        if supervising is not None and not supervising.done():
            supervising.cancel()
            await asyncio.gather(supervising, return_exceptions=True)
        await launcher.stop()
