"""`ragmesh up --detach` and `ragmesh down`: the mesh in the background, found again by the pid
file `up` writes (STATE_DIR/run/up.pid), its terminal output in STATE_DIR/logs/up.log."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess  # nosec B404: starts ragmesh itself, never a shell
import sys
import time
from pathlib import Path

from ragmeshd.commands.convention import (
    EXIT_FAILURE,
    EXIT_OK,
    CommandError,
    parse_duration,
    settings_or_exit,
)
from ragmeshd.executables import ragmesh_argv
from ragmeshd.state import MeshLayout

# How often `--detach` and `down` look at the mesh while they wait.
POLL_INTERVAL_S = 0.2
DOWN_TIMEOUT_S = 60.0


def pid_file(layout: MeshLayout) -> Path:
    return layout.run_dir / "up.pid"


def up_log(layout: MeshLayout) -> Path:
    return layout.logs_dir / "up.log"


def running_pid(layout: MeshLayout) -> int | None:
    """The pid of this state folder's `ragmesh up`, if one is alive."""
    try:
        pid = int(pid_file(layout).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_detached(up_args: list[str], timeout_s: float) -> int:
    """Start `ragmesh up UP_ARGS` in its own session and return once the mesh is healthy
    (its mesh.json written), or fail with the end of its log."""
    layout = MeshLayout(settings_or_exit().state_dir)
    if (pid := running_pid(layout)) is not None:
        raise CommandError(f"a mesh already runs from {layout.state_dir} (pid {pid})")
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    layout.mesh_state.unlink(missing_ok=True)
    with up_log(layout).open("ab") as log:
        process = subprocess.Popen(  # nosec B603: our own interpreter and arguments
            ragmesh_argv("up", *up_args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(layout).write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CommandError(f"ragmesh up exited with {process.returncode}:\n{_tail(layout)}")
        if layout.mesh_state.exists():
            print(
                f"ragmesh up runs in the background (pid {process.pid}); its output is in"
                f" {up_log(layout)}; stop it with `ragmesh down`",
                file=sys.stderr,
            )
            return EXIT_OK
        time.sleep(POLL_INTERVAL_S)
    process.terminate()
    raise CommandError(f"the mesh was not up within {timeout_s:.0f} s:\n{_tail(layout)}")


def _tail(layout: MeshLayout, lines: int = 20) -> str:
    try:
        return "\n".join(up_log(layout).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def register(subparsers: argparse._SubParsersAction) -> None:
    down = subparsers.add_parser(
        "down",
        help="stop the mesh `ragmesh up --detach` started",
        description="Sends SIGTERM to the `ragmesh up` of the state folder (STATE_DIR/run/up.pid),"
        " which stops every process gracefully, and waits until it has exited.",
    )
    down.add_argument(
        "--timeout",
        type=parse_duration,
        default=DOWN_TIMEOUT_S,
        metavar="DURATION",
        help=f"how long to wait for a graceful stop (default {DOWN_TIMEOUT_S:.0f}s)",
    )
    down.set_defaults(handler=_down)


def _down(args: argparse.Namespace) -> int:
    layout = MeshLayout(settings_or_exit().state_dir)
    pid = running_pid(layout)
    if pid is None:
        print(f"no mesh runs from {layout.state_dir}", file=sys.stderr)
        pid_file(layout).unlink(missing_ok=True)
        return EXIT_OK
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if running_pid(layout) is None:
            pid_file(layout).unlink(missing_ok=True)
            print(f"stopped the mesh of {layout.state_dir}", file=sys.stderr)
            return EXIT_OK
        time.sleep(POLL_INTERVAL_S)
    print(f"the mesh (pid {pid}) did not stop within {args.timeout:.0f} s", file=sys.stderr)
    return EXIT_FAILURE
