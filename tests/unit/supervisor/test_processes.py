"""The supervisor: start-up failures name the process and show the end of its logs; a
child that exits is started again; a crash loop ends supervision."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from ragmeshd.supervisor.processes import (
    CrashLoopError,
    ProcessSpec,
    StartupFailedError,
    Supervisor,
)
from ragmeshd.supervisor.restarts import RestartPolicy
from tests.helpers import eventually_async


async def never_ready() -> bool:
    return False


async def test_a_process_that_never_becomes_healthy_is_named_with_its_log(tmp_path: Path) -> None:
    supervisor = Supervisor()
    spec = ProcessSpec(
        name="slowpoke",
        argv=[
            sys.executable,
            "-c",
            "import time; print('still loading', flush=True); time.sleep(60)",
        ],
        log_path=tmp_path / "slowpoke.log",
        is_ready=never_ready,
    )
    try:
        with pytest.raises(StartupFailedError) as error:
            await supervisor.start_in_order([spec], timeout_s=1.5)
    finally:
        await supervisor.stop_all()
    message = str(error.value)
    assert "slowpoke did not become healthy in time" in message
    assert "still loading" in message
    assert not supervisor.processes


async def test_a_process_that_exits_early_is_named_with_its_stderr(tmp_path: Path) -> None:
    supervisor = Supervisor()
    spec = ProcessSpec(
        name="crasher",
        argv=[sys.executable, "-c", "import sys; sys.exit('bad setting: port')"],
        log_path=tmp_path / "crasher.log",
        is_ready=never_ready,
    )
    with pytest.raises(StartupFailedError) as error:
        await supervisor.start_in_order([spec], timeout_s=30)
    await supervisor.stop_all()
    assert "crasher exited with code 1" in str(error.value)
    assert "bad setting: port" in str(error.value)


async def test_processes_start_in_order_each_after_the_previous_is_ready(tmp_path: Path) -> None:
    supervisor = Supervisor()
    started: list[str] = []

    def ready_after_start(name: str):  # type: ignore[no-untyped-def]
        async def is_ready() -> bool:
            started.append(name)
            return True

        return is_ready

    specs = [
        ProcessSpec(
            name=name,
            argv=[sys.executable, "-c", "import time; time.sleep(60)"],
            log_path=tmp_path / f"{name}.log",
            is_ready=ready_after_start(name),
        )
        for name in ("first", "second", "third")
    ]
    await supervisor.start_in_order(specs, timeout_s=30)
    pids = [process.pid for process in supervisor.processes]
    await supervisor.stop_all()
    assert started == ["first", "second", "third"]
    assert len(set(pids)) == 3
    assert not supervisor.processes


async def always_ready() -> bool:
    return True


async def test_a_child_that_exits_is_started_again_and_its_restart_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    changes: list[int] = []
    supervisor = Supervisor(RestartPolicy(first_delay_s=0.1), on_change=lambda: changes.append(1))
    spec = ProcessSpec(
        name="worker",
        argv=[sys.executable, "-c", "import time; time.sleep(60)"],
        log_path=tmp_path / "worker.log",
        is_ready=always_ready,
    )
    await supervisor.start_in_order([spec], timeout_s=30)
    (process,) = supervisor.processes
    first_pid = process.pid
    watching = asyncio.ensure_future(supervisor.supervise())
    try:
        os.kill(first_pid, signal.SIGKILL)
        await eventually_async(
            lambda: process.pid != first_pid and process.healthy_since is not None,
            20,
            "restarted and healthy again",
            interval_s=0.05,
        )
        assert process.popen.poll() is None
        assert process.history.restarts == 1
        assert process.history.last_exit == "signal SIGKILL"
        assert changes  # the mesh state is rewritten with the new pid
        (record,) = [r for r in caplog.records if r.getMessage() == "child exited; restarting"]
        assert record.__dict__["child"] == "worker"
        assert record.__dict__["signal"] == "SIGKILL"
        assert (record.__dict__["attempt"], record.__dict__["next_delay_s"]) == (1, 0.1)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await supervisor.stop_all()


async def test_a_crash_loop_stops_supervising_naming_the_child_and_its_log(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(RestartPolicy(first_delay_s=0.05, crash_loop_exits=3))
    marker = tmp_path / "started-once"
    # Healthy the first time; every restart then dies at once, as a broken setting would.
    script = (
        "import pathlib, sys, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if marker.exists(): sys.exit('cannot open the model: disk full')\n"
        "marker.write_text('')\n"
        "time.sleep(0.3)\n"
        "sys.exit(2)\n"
    )
    spec = ProcessSpec(
        name="flaky",
        argv=[sys.executable, "-c", script],
        log_path=tmp_path / "flaky.log",
        is_ready=always_ready,
    )
    await supervisor.start_in_order([spec], timeout_s=30)
    try:
        with pytest.raises(CrashLoopError) as error:
            await asyncio.wait_for(supervisor.supervise(), timeout=30)
    finally:
        await supervisor.stop_all()
    message = str(error.value)
    assert message.startswith("flaky exited 3 times within 120 s (last: exit code 1)")
    assert "cannot open the model: disk full" in message


async def test_a_restart_waits_until_its_dependencies_are_ready(tmp_path: Path) -> None:
    supervisor = Supervisor(RestartPolicy(first_delay_s=0.05))
    database_up = False

    async def database_ready() -> bool:
        return database_up

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    database = ProcessSpec("db", sleeper, tmp_path / "db.log", is_ready=database_ready)
    server = ProcessSpec(
        "server", sleeper, tmp_path / "server.log", is_ready=always_ready, depends_on=["db"]
    )
    supervisor.start(database)
    await supervisor.wait_ready(supervisor.start(server), deadline=float("inf"))
    watching = asyncio.ensure_future(supervisor.supervise())
    try:
        server_process = supervisor.processes[1]
        first_pid = server_process.pid
        os.kill(first_pid, signal.SIGKILL)
        await asyncio.sleep(1.0)
        assert server_process.restart_pending  # held back: its database is not ready
        database_up = True
        await eventually_async(
            lambda: server_process.pid != first_pid, 20, "restarted", interval_s=0.05
        )
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await supervisor.stop_all()
