"""Starting whole meshes (`ragmesh up` on free ports); the session's shared one is the `mesh`
fixture in tests/conftest.py, used by tests/e2e and tests/fuzz."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from ragmeshd.bench.ports import free_port, free_port_run
from ragmeshd.runtime.channels import metadata_interceptors
from ragmeshd.runtime.tls import channel_credentials
from ragmeshd.supervisor.plan import MeshState
from tests.helpers import REPO_ROOT, ragmesh_command

MESH_START_TIMEOUT_S = 240
# How long the test meshes' Envoy waits for a rate-limit decision (ratelimit.timeout_s): well
# past a loaded machine's slowest answer, and under the 10 s deadline the tests' calls carry.
RATELIMIT_TIMEOUT_S = 5.0


@dataclass
class Mesh:
    state_dir: Path
    endpoint: str
    admin: str
    env: dict[str, str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def certs(self) -> Path:
        return self.state_dir / "certs"

    @property
    def state(self) -> MeshState:
        return MeshState.read(self.state_dir / "mesh.json")

    def client_credentials(self) -> grpc.ChannelCredentials:
        return channel_credentials(
            self.certs / "ca.pem",
            self.certs / "clients" / "client.pem",
            self.certs / "clients" / "client-key.pem",
        )

    @property
    def api_key(self) -> str:
        return (self.state_dir / "keys" / "admin.key").read_text().strip()

    def channel(self) -> grpc.aio.Channel:
        """A client channel with the client certificate and the admin API key."""
        return grpc.aio.secure_channel(
            self.endpoint,
            self.client_credentials(),
            interceptors=metadata_interceptors(self.api_key),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """For HTTP clients: trust the mesh CA and present the client certificate."""
        context = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        context.load_cert_chain(
            str(self.certs / "clients" / "client.pem"),
            str(self.certs / "clients" / "client-key.pem"),
        )
        return context

    @property
    def base_url(self) -> str:
        """Envoy's client listener for HTTP/JSON and the OpenAI-compatible paths."""
        return f"https://{self.endpoint}"

    def tls_flags(self) -> list[str]:
        return [
            "-cacert", str(self.certs / "ca.pem"),
            "-cert", str(self.certs / "clients" / "client.pem"),
            "-key", str(self.certs / "clients" / "client-key.pem"),
            "-H", f"authorization: Bearer {self.api_key}",
        ]  # fmt: skip


def mesh_env(state_dir: Path) -> dict[str, str]:
    """Settings that put every listener of a mesh on free ports under `state_dir`."""
    step = 7  # replicas of a service: base port + i * step
    return {
        "RAGMESH_STATE_DIR": str(state_dir),
        "RAGMESH_SERVER__REQUIRE_API_KEY": "true",
        # The CA key's passphrase, for `up` and `ragmesh certs` only (never in ~/.config).
        "RAGMESH_CA_PASSPHRASE": f"e2e-{state_dir.name}",
        # 0.0.0.0 on purpose: the socket test checks that only this one is not loopback.
        "RAGMESH_MESH__CLIENT_LISTEN": f"0.0.0.0:{free_port()}",
        "RAGMESH_MESH__INTERNAL_LISTEN": f"127.0.0.1:{free_port()}",
        "RAGMESH_MESH__ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
        "RAGMESH_MESH__REPLICA_PORT_STEP": str(step),
        "RAGMESH_EMBEDDINGS__LISTEN": f"127.0.0.1:{free_port_run(3, step)}",
        "RAGMESH_SEARCH__LISTEN": f"127.0.0.1:{free_port_run(1, step)}",
        "RAGMESH_COORDINATOR__LISTEN": f"127.0.0.1:{free_port_run(1, step)}",
        "RAGMESH_EMBEDDINGS__METRICS_LISTEN": f"127.0.0.1:{free_port_run(3, step)}",
        "RAGMESH_SEARCH__METRICS_LISTEN": f"127.0.0.1:{free_port_run(1, step)}",
        "RAGMESH_COORDINATOR__METRICS_LISTEN": f"127.0.0.1:{free_port_run(1, step)}",
        "RAGMESH_OPENAI__LISTEN": f"127.0.0.1:{free_port()}",
        "RAGMESH_LLM__LISTEN": f"127.0.0.1:{free_port()}",
        "RAGMESH_LLM__METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        # Limited keys' calls are refused when the rate-limit service has not answered in time
        # (fail closed): on 2 busy cores a decision can take past the default 250 ms, which
        # would make a rate-limit test fail by luck (issue 19). A frozen service (the chaos
        # test) still gets its calls refused, each after this long.
        "RAGMESH_RATELIMIT__TIMEOUT_S": str(RATELIMIT_TIMEOUT_S),
    }


def wait_for_mesh(popen: subprocess.Popen[bytes], state_file: Path, log_path: Path) -> None:
    deadline = time.monotonic() + MESH_START_TIMEOUT_S
    while not state_file.exists():
        if popen.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"ragmesh up did not come up:\n{log_path.read_text()}")
        time.sleep(0.3)


def stop_mesh(popen: subprocess.Popen[bytes]) -> int:
    if popen.poll() is None:
        popen.send_signal(signal.SIGINT)
        try:
            popen.wait(60)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    return int(popen.returncode)


@contextmanager
def running_mesh(
    state_dir: Path, extra_env: dict[str, str] | None = None, *up_args: str
) -> Iterator[Mesh]:
    """`ragmesh up` on free ports under `state_dir`, stopped (Ctrl-C) when the block ends."""
    env = {**mesh_env(state_dir), **(extra_env or {})}
    log_path = state_dir / "up.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            ragmesh_command("up", *up_args),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
        )
    try:
        wait_for_mesh(popen, state_dir / "mesh.json", log_path)
        port = env["RAGMESH_MESH__CLIENT_LISTEN"].rsplit(":", 1)[1]
        yield Mesh(
            state_dir=state_dir,
            endpoint=f"127.0.0.1:{port}",
            admin=env["RAGMESH_MESH__ADMIN_LISTEN"],
            env=env,
            popen=popen,
            log_path=log_path,
        )
    finally:
        stop_mesh(popen)
