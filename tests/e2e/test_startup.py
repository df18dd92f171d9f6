"""Start-up order and shutdown of the mesh, and `make up` as a user runs it."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmeshd.bench.ports import is_free
from ragmeshd.runtime.channels import metadata_interceptors
from ragmeshd.runtime.tls import channel_credentials
from ragmeshd.settings import load_settings
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.launcher import MeshLauncher
from ragmeshd.supervisor.processes import ProcessSpec
from tests.helpers import REPO_ROOT
from tests.mesh import mesh_env

pytestmark = pytest.mark.e2e

DATABASE_DELAY_S = 8.0


class SlowDatabaseLauncher(MeshLauncher):
    """The real launcher, with PostgreSQL taking DATABASE_DELAY_S longer to come up."""

    def specs(self) -> list[ProcessSpec]:
        specs = super().specs()
        postgres = next(spec for spec in specs if spec.name == "postgres")
        postgres.argv = ["sh", "-c", f"sleep {DATABASE_DELAY_S}; exec {shlex.join(postgres.argv)}"]
        return specs


def first_log_time(path: Path) -> str:
    match = re.search(r'"time": "([^"]+)"', path.read_text())
    assert match, path.read_text()
    return match.group(1)


# Long (`make test-long`): a mesh of its own behind a database held back for seconds. In the
# suite, `make up`'s banner test below starts a whole mesh and stops it with Ctrl-C.
@pytest.mark.long
async def test_dependents_wait_for_a_slow_database_and_stop_gracefully(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in mesh_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    launcher = SlowDatabaseLauncher(
        settings, MeshLayout(settings.state_dir), {"embeddings": 1, "search": 1}
    )
    started = time.monotonic()
    try:
        await launcher.start(timeout_s=240)
        elapsed = time.monotonic() - started
        assert elapsed >= DATABASE_DELAY_S
        by_name = {p.spec.name: p for p in launcher.supervisor.processes}
        assert all(p.popen.poll() is None for p in by_name.values()), "a process crashed"
        # Search started only once the database accepted connections.
        logs = launcher.layout
        assert first_log_time(logs.log_path("search-0")) > first_log_time(logs.log_path("postgres"))
        assert "database not reachable" not in logs.log_path("search-0").read_text()

        # Calls in flight when the mesh is told to stop still finish.
        certs = launcher.certs
        credentials = channel_credentials(certs.ca, certs.client.cert, certs.client.key)
        port = settings.mesh.client_listen.rsplit(":", 1)[1]
        api_key = launcher.admin_key_file.read_text().strip()
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            credentials,
            interceptors=metadata_interceptors(api_key),
        ) as channel:
            client = embeddings_grpc.EmbeddingsServiceStub(channel)
            await client.Info(embeddings_pb.InfoRequest(), timeout=30)
            calls = [
                asyncio.ensure_future(
                    client.Embed(
                        embeddings_pb.EmbedRequest(inputs=[f"in flight {i} " * 40] * 16),
                        timeout=60,
                    )
                )
                for i in range(12)
            ]
            await asyncio.sleep(0.2)
            stopping = asyncio.ensure_future(launcher.stop())
            results = await asyncio.gather(*calls, return_exceptions=True)
            await stopping
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures
        assert '"event": "shutting down"' in logs.log_path("embeddings-0").read_text()
    finally:
        await launcher.stop()


def test_make_up_prints_a_banner_whose_grpcurl_command_works(tmp_path: Path) -> None:
    env = {**os.environ, **mesh_env(tmp_path)}
    client_port = int(env["RAGMESH_MESH__CLIENT_LISTEN"].rsplit(":", 1)[1])
    process = subprocess.Popen(
        ["make", "--no-print-directory", "up"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 300
        for line in process.stdout:
            output.append(line)
            if "`ragmesh status`" in line or time.monotonic() > deadline:
                break
        banner = "".join(output)
        assert "ragmesh is up." in banner, banner
        commands = [line.strip() for line in output if "grpcurl" in line and " -cacert " in line]
        assert len(commands) == 2, banner
        # The banner names the key file, not the key; the commands read it in a shell.
        assert (tmp_path / "keys" / "admin.key").read_text().strip() not in banner
        listed = subprocess.run(
            ["bash", "-c", commands[0]], capture_output=True, text=True, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        assert "ragmesh.embeddings.v1.EmbeddingsService" in listed.stdout
        called = subprocess.run(
            ["bash", "-c", commands[1]], capture_output=True, text=True, timeout=60
        )
        assert called.returncode == 0, called.stderr
        assert '"dimensions": 384' in called.stdout
    finally:
        # Ctrl-C as a terminal sends it: to the whole foreground group.
        os.killpg(process.pid, signal.SIGINT)
        process.wait(120)
    # make reports the interrupt as its own exit status; what matters is that `ragmesh up`
    # stopped everything it started: its state file is gone and the listener is closed.
    assert process.returncode in (0, -signal.SIGINT, 130), "".join(output)
    assert not (tmp_path / "mesh.json").exists()
    assert is_free(client_port, "0.0.0.0")
