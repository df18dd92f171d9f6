"""A mesh for the benches that measure what clients get: one `ragmesh up` started here on
free loopback ports (in a temporary state folder; converted models are still shared with the
usual state folder), or one already running, named by its state folder. Clients reach it
through Envoy with the client certificate and the admin API key, as users do."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from ragmeshd.bench.ports import free_port
from ragmeshd.executables import ragmesh_argv
from ragmeshd.runtime.channels import metadata_interceptors
from ragmeshd.runtime.tls import channel_credentials
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.plan import MeshState, reachable_endpoint

MESH_START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class MeshHandle:
    state_dir: Path
    endpoint: str
    api_key: str
    state: MeshState

    def channel(self, *, key_interceptors: bool = True) -> grpc.aio.Channel:
        """A channel to Envoy's client listener. Without `key_interceptors` the caller sends
        the key itself (as call metadata), which spares a load generator the interceptors'
        cost per call."""
        certs = MeshLayout(self.state_dir).certs_dir
        credentials = channel_credentials(
            certs / "ca.pem", certs / "clients" / "client.pem", certs / "clients" / "client-key.pem"
        )
        return grpc.aio.secure_channel(
            self.endpoint,
            credentials,
            interceptors=metadata_interceptors(self.api_key) if key_interceptors else None,
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )


def _handle(state_dir: Path) -> MeshHandle:
    state = MeshState.read(MeshLayout(state_dir).mesh_state)
    api_key = MeshLayout(state_dir).admin_key.read_text().strip()
    return MeshHandle(state_dir, reachable_endpoint(state.client_listen), api_key, state)


@contextmanager
def bench_mesh(
    running_state_dir: Path | None,
    models_dir: Path,
    env: dict[str, str] | None = None,
    state_dir: Path | None = None,
) -> Iterator[MeshHandle]:
    """The running mesh of `running_state_dir`, or a new one stopped when the block ends
    (in `state_dir` when given, so that a second mesh finds the first one's data)."""
    if running_state_dir is not None:
        yield _handle(running_state_dir)
        return
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-mesh-") as directory:
        state_dir = state_dir or Path(directory)
        MeshLayout(state_dir).mesh_state.unlink(missing_ok=True)
        ports = {name: free_port() for name in ("client", "internal", "admin")}
        mesh_env = {
            "RAGMESH_STATE_DIR": str(state_dir),
            "RAGMESH_MESH__CLIENT_LISTEN": f"127.0.0.1:{ports['client']}",
            "RAGMESH_MESH__INTERNAL_LISTEN": f"127.0.0.1:{ports['internal']}",
            "RAGMESH_MESH__ADMIN_LISTEN": f"127.0.0.1:{ports['admin']}",
            "RAGMESH_EMBEDDINGS__LISTEN": f"127.0.0.1:{free_port()}",
            "RAGMESH_SEARCH__LISTEN": f"127.0.0.1:{free_port()}",
            "RAGMESH_COORDINATOR__LISTEN": f"127.0.0.1:{free_port()}",
            "RAGMESH_EMBEDDINGS__METRICS_LISTEN": "",
            "RAGMESH_SEARCH__METRICS_LISTEN": "",
            "RAGMESH_COORDINATOR__METRICS_LISTEN": "",
            "RAGMESH_EMBEDDINGS__RUNTIME_CACHE_DIR": str(models_dir),
            **(env or {}),
        }
        log_path = state_dir / "up.log"
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                ragmesh_argv("up"),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **mesh_env},
            )
        try:
            deadline = time.monotonic() + MESH_START_TIMEOUT_S
            while not MeshLayout(state_dir).mesh_state.exists():
                if popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ragmesh up did not come up:\n{log_path.read_text()}")
                time.sleep(0.3)
            yield _handle(state_dir)
        finally:
            if popen.poll() is None:
                popen.send_signal(signal.SIGINT)
                try:
                    popen.wait(60)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its live descendants, from /proc."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        total += process_cpu_seconds(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process, its children not included; 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
