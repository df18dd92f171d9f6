"""Starting ragmesh's processes in dependency order, restarting them, stopping them gracefully.

Each child runs in its own process group. Its stdout (ragmesh's JSON log lines, Envoy's JSON
access log) goes to `<name>.log` and its stderr (tracebacks of a crash, native libraries'
own messages, Envoy's and PostgreSQL's logs) to `<name>.stderr.log`, so the first stays
machine-readable. Readiness is its gRPC health turning SERVING (polled, no fixed sleeps).

Once the mesh is up, `supervise` watches every child: one that exits without being asked is
started again after a backoff (ragmeshd/supervisor/restarts.py), once the children it depends on
are healthy again, and one JSON log line records each restart. A crash loop stops the mesh.
No process-manager library fits this job: supervisord and circus are daemons of their own
(config files, XML-RPC or ZeroMQ) without health-gated start order or a capped exponential
backoff, and honcho restarts nothing; the loop below is the small part of them `up` needs.
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

from ragmeshd.progress import Progress
from ragmeshd.supervisor.log_rotation import rotate_folder
from ragmeshd.supervisor.restarts import RestartHistory, RestartPolicy, exit_fields

_log = logging.getLogger("ragmesh.supervisor")

# How often readiness is polled, and how long a stopping child gets before SIGKILL.
HEALTH_POLL_INTERVAL_S = 0.2
STOP_TIMEOUT_S = 20.0
LOG_LINES_ON_FAILURE = 20


class StartupFailedError(Exception):
    """A child did not become ready; the message names it and ends with its last log lines."""


class CrashLoopError(Exception):
    """A child kept exiting; the message names it and ends with its last log lines."""


@dataclass
class ProcessSpec:
    """One child process: how to start it and how to tell it is ready."""

    name: str
    argv: Sequence[str]
    log_path: Path
    # Awaited repeatedly until it returns True; None means ready once started.
    is_ready: Callable[[], Awaitable[bool]] | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Names of the children it cannot start without: a restart waits until they are ready.
    depends_on: Sequence[str] = ()


@dataclass
class ManagedProcess:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    history: RestartHistory
    # time.monotonic() since when it has been ready; None while starting or restarting.
    healthy_since: float | None = None
    # Set when the supervisor itself stops it: its exit is then no reason to restart it.
    stopping: bool = False
    # Set from its exit until it runs again.
    restart_pending: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    async def is_ready(self) -> bool:
        """One readiness probe; a probe that fails counts as not ready."""
        if self.spec.is_ready is None:
            return True
        try:
            return await self.spec.is_ready()
        except Exception:  # a probe's own failure is a "no", never the supervisor's end
            return False

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
    """Owns the children it started; restarts them; stops them in reverse order."""

    def __init__(
        self,
        policy: RestartPolicy | None = None,
        on_change: Callable[[], None] | None = None,
        rotation: LogRotation | None = None,
    ) -> None:
        self.processes: list[ManagedProcess] = []
        # The logs folder rotated by size while the mesh runs (None: never).
        self._rotation = rotation
        self.policy = policy or RestartPolicy()
        # Called after a child's pid, restart count or last exit changed.
        self._on_change = on_change or (lambda: None)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, spec: ProcessSpec) -> ManagedProcess:
        process = ManagedProcess(spec, _spawn(spec), RestartHistory(self.policy))
        self.processes.append(process)
        _log.info("started", extra={"child": spec.name, "pid": process.pid})
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
            if await process.is_ready():
                process.healthy_since = time.monotonic()
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

    async def supervise(self) -> None:
        """Restart every child that exits without being asked, until a crash loop (raises
        CrashLoopError). Cancelling it stops the watching and any restart under way."""
        try:
            while True:
                for process in list(self.processes):
                    if process.stopping or process.restart_pending:
                        continue
                    returncode = process.popen.poll()
                    if returncode is not None:
                        self._schedule_restart(process, returncode)
                if self._rotation is not None:
                    self._rotation.tick()
                await asyncio.sleep(HEALTH_POLL_INTERVAL_S)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _schedule_restart(self, process: ManagedProcess, returncode: int) -> None:
        name = process.spec.name
        decision = process.history.record_exit(returncode, time.monotonic(), process.healthy_since)
        process.healthy_since = None
        if decision.crash_loop:
            policy = self.policy
            _log.error(
                "crash loop; stopping the mesh",
                extra={"child": name, **exit_fields(returncode), "exits": policy.crash_loop_exits},
            )
            raise CrashLoopError(
                f"{name} exited {policy.crash_loop_exits} times within"
                f" {policy.crash_loop_window_s:.0f} s (last: {process.history.last_exit});"
                f" the end of its logs:\n{process.last_log_lines()}"
            )
        _log.warning(
            "child exited; restarting",
            extra={
                "child": name,
                **exit_fields(returncode),
                "attempt": decision.attempt,
                "next_delay_s": decision.delay_s,
            },
        )
        process.restart_pending = True
        self._on_change()
        task = asyncio.create_task(self._restart(process, decision.delay_s), name=f"restart {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, process: ManagedProcess, delay_s: float) -> None:
        """After the backoff and once its dependencies are ready, start it again; it counts
        as healthy (for the backoff's reset) once its readiness probe says so."""
        await asyncio.sleep(delay_s)
        await self._wait_for_dependencies(process)
        process.popen = _spawn(process.spec)
        process.history.restarts += 1
        process.restart_pending = False
        name = process.spec.name
        _log.info(
            "restarted",
            extra={"child": name, "pid": process.pid, "restarts": process.history.restarts},
        )
        self._on_change()
        popen = process.popen
        while popen.poll() is None and not process.stopping:
            if await process.is_ready():
                process.healthy_since = time.monotonic()
                _log.info("healthy again", extra={"child": name, "pid": popen.pid})
                return
            await asyncio.sleep(HEALTH_POLL_INTERVAL_S)

    async def _wait_for_dependencies(self, process: ManagedProcess) -> None:
        by_name = {p.spec.name: p for p in self.processes}
        dependencies = [by_name[name] for name in process.spec.depends_on if name in by_name]
        logged = False
        while True:
            waiting = [d.spec.name for d in dependencies if not await d.is_ready()]
            if not waiting:
                return
            if not logged:
                _log.info(
                    "restart waits for its dependencies",
                    extra={"child": process.spec.name, "waiting_for": waiting},
                )
                logged = True
            await asyncio.sleep(HEALTH_POLL_INTERVAL_S)

    async def stop(self, processes: Sequence[ManagedProcess]) -> None:
        """SIGTERM these children together and wait for each; SIGKILL any that hang."""
        for process in processes:
            process.stopping = True
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


def _spawn(spec: ProcessSpec) -> subprocess.Popen[bytes]:
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        spec.log_path.open("ab") as log_file,
        stderr_path(spec.log_path).open("ab") as error_file,
    ):
        return subprocess.Popen(
            list(spec.argv),
            stdout=log_file,
            stderr=error_file,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **spec.env},
            # Its own group: a terminal's Ctrl-C reaches only the supervisor, which then
            # stops the children in order.
            start_new_session=True,
        )


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


@dataclass
class LogRotation:
    """Rotate the *.log files of `folder` over `max_bytes` (keeping `keep` copies), looking
    every `every_ticks` supervision ticks."""

    folder: Path
    max_bytes: int
    keep: int
    every_ticks: int = 10
    _ticks: int = 0

    def tick(self) -> None:
        self._ticks += 1
        if self._ticks % self.every_ticks == 0:
            rotate_folder(self.folder, self.max_bytes, self.keep)
