"""The supervisor's start-up failures name the process and show the end of its logs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services.mesh.supervisor import ProcessSpec, StartupFailedError, Supervisor


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
