"""Starting ragmesh's processes in dependency order and stopping them gracefully.

Each child runs in its own process group. Its stdout (ragmesh's JSON log lines, Envoy's JSON
access log) goes to `<name>.log` and its stderr (tracebacks of a crash, native libraries'
own messages, Envoy's and PostgreSQL's logs) to `<name>.stderr.log`, so the first stays
machine-readable. Readiness is its gRPC health turning SERVING (polled, no fixed sleeps).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.progress import Progress

_log = logging.getLogger("ragmesh.supervisor")

# How often readiness is polled, and how long a stopping child gets before SIGKILL.
HEALTH_POLL_INTERVAL_S = 0.2
STOP_TIMEOUT_S = 20.0
LOG_LINES_ON_FAILURE = 20


class StartupFailedError(Exception):
    """A child did not become ready; the message names it and ends with its last log lines."""


@dataclass
class ProcessSpec:
    """One child process: how to start it and how to tell it is ready."""

    name: str
    argv: Sequence[str]
    log_path: Path
    # Awaited repeatedly until it returns True; None means ready once started.
    is_ready: Callable[[], Awaitable[bool]] | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ManagedProcess:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def last_log_lines(self, count: int = LOG_LINES_ON_FAILURE) -> str:
        """The end of both of its logs, for a start-up failure message."""
        parts = []
        for path in (self.spec.log_path, stderr_path(self.spec.log_path)):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except FileNotFoundError:
                continue
            if lines:
                parts.append(f"--- {path}\n" + "\n".join(lines[-count:]))
        return "\n".join(parts) or "(nothing logged)"


class Supervisor:
    """Owns the children it started; stops them in reverse order."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def start(self, spec: ProcessSpec) -> ManagedProcess:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with (
            spec.log_path.open("ab") as log_file,
            stderr_path(spec.log_path).open("ab") as error_file,
        ):
            popen = subprocess.Popen(
                list(spec.argv),
                stdout=log_file,
                stderr=error_file,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **spec.env},
                # Its own group: a terminal's Ctrl-C reaches only the supervisor, which then
                # stops the children in order.
                start_new_session=True,
            )
        process = ManagedProcess(spec, popen)
        self.processes.append(process)
        _log.info("started", extra={"child": spec.name, "pid": popen.pid})
        return process

    async def wait_ready(self, process: ManagedProcess, deadline: float) -> None:
        """Poll until ready; raise StartupFailedError if it exits or `deadline` passes."""
        spec = process.spec
        while True:
            exit_code = process.popen.poll()
            if exit_code is not None:
                raise StartupFailedError(
                    f"{spec.name} exited with code {exit_code} before it became healthy;"
                    f" the end of its logs:\n{process.last_log_lines()}"
                )
            if spec.is_ready is None or await spec.is_ready():
                return
            if time.monotonic() > deadline:
                raise StartupFailedError(
                    f"{spec.name} did not become healthy in time; the end of its logs:"
                    f"\n{process.last_log_lines()}"
                )
            await asyncio.sleep(HEALTH_POLL_INTERVAL_S)

    async def start_in_order(
        self, specs: Sequence[ProcessSpec], timeout_s: float, progress: Progress | None = None
    ) -> None:
        """Start each spec after the previous one is ready, all within `timeout_s`; `progress`
        counts the ready ones and names the one being waited for."""
        deadline = time.monotonic() + timeout_s
        for spec in specs:
            if progress is not None:
                progress.note(f"waiting for {spec.name}")
            await self.wait_ready(self.start(spec), deadline)
            if progress is not None:
                progress.advance()

    async def stop(self, processes: Sequence[ManagedProcess]) -> None:
        """SIGTERM these children together and wait for each; SIGKILL any that hang."""
        await asyncio.gather(
            *(asyncio.to_thread(stop_process, p.popen, STOP_TIMEOUT_S) for p in processes)
        )
        for process in processes:
            _log.info(
                "stopped", extra={"child": process.spec.name, "exit_code": process.popen.poll()}
            )
            self.processes.remove(process)

    async def stop_all(self) -> None:
        """Stop every child, last started first."""
        for process in reversed(list(self.processes)):
            await self.stop([process])


def stderr_path(log_path: Path) -> Path:
    return log_path.with_suffix(".stderr.log")


def stop_process(popen: subprocess.Popen[bytes], timeout_s: float) -> None:
    if popen.poll() is not None:
        return
    popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
