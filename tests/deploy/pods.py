"""Running the containers of rendered manifests as local processes, the way a kubelet would:
the command, args and environment of each container, its volumes as directories, its probes.

Host names resolve to loopback through a private /etc/hosts (each process gets a mount
namespace of its own, `unshare -m`, with the file bind-mounted), so the names in the
manifests (Envoy's Service "envoy", the headless Services) reach the local processes
unchanged and TLS checks them as in a cluster. Every port the manifests use is mapped to a
free local port, consistently in environment values and probes.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy.manifests import Container, Doc, source_name, volume_sources
from tests.helpers import free_port

_PORT = re.compile(r"(?<=:)(\d{2,5})\b")


@dataclass
class PortMap:
    """Manifest port -> free local port, the same for every container."""

    ports: dict[int, int] = field(default_factory=dict)

    def port(self, port: int) -> int:
        if port not in self.ports:
            self.ports[port] = free_port()
        return self.ports[port]

    def rewrite(self, value: str) -> str:
        return _PORT.sub(lambda m: str(self.port(int(m.group(1)))), value)


@dataclass
class Pod:
    """One container's process."""

    container: Container
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM, as the kubelet sends, then SIGKILL after the grace period."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return int(self.popen.returncode)


def hosts_file(path: Path, names: list[str]) -> Path:
    lines = ["127.0.0.1 localhost", *(f"127.0.0.1 {name}" for name in names)]
    path.write_text("\n".join(lines) + "\n")
    return path


def with_hosts(argv: list[str], hosts: Path) -> list[str]:
    """`argv` in a mount namespace of its own where /etc/hosts is `hosts` (PID kept: exec)."""
    script = f'mount --bind "{hosts}" /etc/hosts && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def pod_root(container: Container, root: Path, volumes: dict[str, Path]) -> Path:
    """A directory standing for the container's filesystem: each volume mount is a symlink
    (Secret, ConfigMap and projected volumes: to a folder of the pod's own holding the files
    the volume selects, each a link into `volumes[source name]`; emptyDir: a directory of
    the pod's own)."""
    pod = root / container.deployment
    for mount_path, volume in sorted(container.mounts(), key=lambda item: len(item[0])):
        target = pod / mount_path.lstrip("/")
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        sources = volume_sources(volume)
        if sources:
            projected = pod / ".volumes" / volume["name"]
            projected.mkdir(parents=True, exist_ok=True)
            for kind, source in sources:
                folder = volumes[source_name(kind, source)]
                items = source.get("items") or [
                    {"key": p.name, "path": p.name} for p in sorted(folder.iterdir())
                ]
                for item in items:
                    (projected / item["path"]).symlink_to(folder / item["key"])
            target.symlink_to(projected)
        else:
            # An emptyDir is shared by the pod's containers: one folder per volume name.
            shared = pod / ".volumes" / volume["name"]
            shared.mkdir(parents=True, exist_ok=True)
            target.symlink_to(shared)
    return pod


def localize(
    value: str,
    container: Container,
    pod: Path,
    ports: PortMap,
    image_paths: dict[str, str] | None = None,
) -> str:
    """A manifest value for this machine: paths under any mount of the pod into the pod's
    folder (an init container writes paths its pod's other containers read), paths inside the
    image to their `image_paths` counterparts here, ports mapped."""
    for image_path, local in (image_paths or {}).items():
        if value == image_path or value.startswith(image_path + "/"):
            return local + value.removeprefix(image_path)
    pod_spec = container.pod["spec"]
    mount_paths = {
        mount["mountPath"]
        for spec in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]
        for mount in spec.get("volumeMounts", [])
    }
    for mount_path in mount_paths:
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(pod) + value
    return ports.rewrite(value)


@contextmanager
def started(
    container: Container, argv: list[str], env: dict[str, str], cwd: Path, log_dir: Path
) -> Iterator[Pod]:
    log_path = log_dir / f"{container.deployment}-{container.name}.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, env=env,
        )  # fmt: skip
    pod = Pod(container, popen, log_path)
    try:
        yield pod
    finally:
        pod.stop()


def probe(pod: Pod, name: str, ports: PortMap, timeout_s: float) -> None:
    """Run the container's probe `name` until it succeeds, as the kubelet would."""
    spec: Doc = pod.container.spec[name]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pod.popen.poll() is not None:
            raise AssertionError(f"{pod.container.name} exited before its {name}:\n{pod.log()}")
        if probe_passes(spec, ports):
            return
        time.sleep(0.25)
    raise AssertionError(f"{pod.container.name}: {name} {spec} never passed:\n{pod.log()}")


def probe_passes(spec: Doc, ports: PortMap) -> bool:
    if "grpc" in spec:
        target = f"127.0.0.1:{ports.port(spec['grpc']['port'])}"
        with grpc.insecure_channel(target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=spec["grpc"].get("service", "")),
                    timeout=1,
                )
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    if "httpGet" in spec:
        url = f"http://127.0.0.1:{ports.port(spec['httpGet']['port'])}{spec['httpGet']['path']}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # nosec B310: loopback
                return bool(200 <= response.status < 400)
        except OSError:
            return False
    if "tcpSocket" in spec:
        try:
            with socket.create_connection(("127.0.0.1", ports.port(spec["tcpSocket"]["port"])), 1):
                return True
        except OSError:
            return False
    raise AssertionError(f"unsupported probe {spec}")
