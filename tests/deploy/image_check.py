"""The built image, run the way the manifests run it: uid 10001, read-only root filesystem,
volumes only for /tmp and the state directory, and no network at all (so the model must be
inside). Run by `make image-test` (it needs the image: `make image`), not by `make test`.

IMAGE names the image, CONTAINER_RUN the run command (e.g. "podman run").
"""

from __future__ import annotations

import os
import shlex
import subprocess

IMAGE = os.environ.get("IMAGE", "localhost/ragmesh:0.1.0")
RUN = shlex.split(os.environ.get("CONTAINER_RUN", "podman run"))
AS_IN_KUBERNETES = [
    "--rm", "--network=none", "--read-only", "--user", "10001:10001",
    "--tmpfs", "/tmp", "--tmpfs", "/var/lib/ragmesh",
]  # fmt: skip

# Inside the container: start the embeddings server (plaintext, no keys: nothing can reach it
# but this script), wait for SERVING on its health-only port, embed a text, stop it.
_EMBED_INSIDE = """
import subprocess, sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb, embeddings_service_pb2_grpc as rpc
server = subprocess.Popen(["ragmesh", "serve", "embeddings"])
with grpc.insecure_channel("127.0.0.1:8091") as health_channel:
    health = health_pb2_grpc.HealthStub(health_channel)
    for _ in range(600):
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(
                service="ragmesh.embeddings.v1.EmbeddingsService"), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                break
        except grpc.RpcError:
            pass
        if server.poll() is not None:
            sys.exit("server exited")
        time.sleep(0.5)
with grpc.insecure_channel("127.0.0.1:50051") as channel:
    reply = rpc.EmbeddingsServiceStub(channel).Embed(pb.EmbedRequest(inputs=["hi"]), timeout=60)
    info = rpc.EmbeddingsServiceStub(channel).Info(pb.InfoRequest(), timeout=60)
print("dimensions", len(reply.embeddings[0].values))
print("runtime", info.runtime)
server.terminate()
sys.exit(server.wait(60))
"""


def _run(*argv: str, env: dict[str, str] | None = None) -> str:
    env_flags = [flag for key, value in (env or {}).items() for flag in ("-e", f"{key}={value}")]
    result = subprocess.run(
        [*RUN, *AS_IN_KUBERNETES, *env_flags, IMAGE, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_cli_and_envoy_run_as_non_root_on_a_read_only_root() -> None:
    out = _run("sh", "-c", "id -u && ragmesh --version && envoy --version")
    lines = out.splitlines()
    assert lines[0] == "10001"
    assert lines[1].startswith("ragmesh ")
    assert "envoy" in out.lower()


def test_embeddings_serves_from_the_model_inside_without_network() -> None:
    out = _run(
        "python",
        "-c",
        _EMBED_INSIDE,
        env={
            "RAGMESH_SERVER__REQUIRE_API_KEY": "false",
            "RAGMESH_SERVER__HEALTH_LISTEN": "127.0.0.1:8091",
            "RAGMESH_EMBEDDINGS__METRICS_LISTEN": "",
            # As the manifests set it: the model converted at build, read-only.
            "RAGMESH_EMBEDDINGS__RUNTIME_CACHE_DIR": "/opt/ragmesh/models",
        },
    )
    assert "dimensions 384" in out
    # The runtime chosen at build time serves, from the read-only image.
    assert "runtime openvino" in out or "runtime onnx" in out, out


def test_the_image_fits_its_size_budget() -> None:
    """One image for every role, within the budget the Makefile states (IMAGE_SIZE_BUDGET)."""
    engine = os.environ.get("CONTAINER_ENGINE", "podman")
    budget = int(os.environ.get("IMAGE_SIZE_BUDGET", "3000000000"))
    size = subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Size}}", IMAGE],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert int(size) <= budget, f"{IMAGE} is {int(size) / 1e9:.2f} GB, over {budget / 1e9:.2f} GB"
