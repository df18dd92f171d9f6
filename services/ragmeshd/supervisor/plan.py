"""What `ragmesh up` runs: the services in start order and where each replica listens."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragmeshd.runtime.api import API_FILES, full_service_name
from ragmeshd.runtime.client_retries import IDEMPOTENT_BY_SERVICE
from ragmeshd.settings import Settings

# Methods that are safe to send twice, so Envoy may retry them on another replica: those whose
# proto declares `option idempotency_level` (NO_SIDE_EFFECTS or IDEMPOTENT), read from the
# stubs' descriptors by ragmeshd/runtime/client_retries.py, whose clients retry the same ones.
RETRY_METHODS = IDEMPOTENT_BY_SERVICE

# The services of the mesh in dependency order, with their gRPC service names.
SERVICE_ORDER = ("embeddings", "search", "llm", "coordinator")
_GRPC_SERVICES = {
    "embeddings": "EmbeddingsService",
    "search": "SearchService",
    "llm": "LlmService",
    "coordinator": "CoordinatorService",
}


@dataclass(frozen=True)
class Replica:
    """One server process of a service."""

    service: str
    grpc_service: str
    index: int
    host: str
    port: int
    # Where its Prometheus /metrics is served ("" when off).
    metrics_listen: str = ""

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def envoy_max_requests(settings: Settings, service: str) -> int | None:
    """Envoy's per-replica cap on calls in flight where a setting sizes it (embeddings, whose
    capacity is the model's), else None: envoy/limits.py's default for the service."""
    if service == "embeddings":
        return settings.embeddings.envoy_max_requests
    if service == "llm":
        return settings.llm.envoy_max_requests
    return None


def grpc_service_name(service: str) -> str | None:
    """The full gRPC name of a mesh service, or None if this build has no API for it."""
    short = _GRPC_SERVICES[service]
    for file in API_FILES:
        if short in file.services_by_name:
            return full_service_name(file, short)
    return None


def available_services() -> list[str]:
    """The services this build can run: an API and a server for each."""
    return [
        service
        for service in SERVICE_ORDER
        if grpc_service_name(service) is not None
        and importlib.util.find_spec(f"ragmeshd.{service}.server") is not None
    ]


def parse_replicas(values: list[str]) -> dict[str, int]:
    """`["embeddings=2", "search=1"]` → counts; every other service gets 1."""
    counts = dict.fromkeys(available_services(), 1)
    for value in values:
        service, _, count = value.partition("=")
        if service not in counts:
            raise ValueError(f"--replicas {value}: unknown service {service!r}; one of {counts}")
        if not count.isdigit() or not 1 <= int(count) <= 16:
            raise ValueError(f"--replicas {value}: the count must be 1 to 16")
        counts[service] = int(count)
    return counts


def check_replicas(settings: Settings, counts: dict[str, int]) -> None:
    """ValueError for replicas that cannot share their store: an embedded Qdrant (qdrant-edge
    under the state folder, or qdrant-client's local mode) belongs to one process; a second
    search replica could not open it, or would hold documents of its own."""
    search = settings.search
    shared = search.qdrant_location.startswith(("http://", "https://"))
    if search.backend == "qdrant" and not shared and counts.get("search", 0) > 1:
        raise ValueError(
            f"--replicas search={counts['search']}: the embedded Qdrant is one process's; "
            "point search.qdrant_location at a Qdrant server (http(s)://...) or run one "
            "search replica"
        )


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def plan_replicas(settings: Settings, counts: dict[str, int]) -> list[Replica]:
    """Replica i of a service listens on the service's port + i * replica_port_step, and
    serves its metrics on the service's metrics port + i * replica_port_step."""
    replicas = []
    for service in SERVICE_ORDER:
        grpc_service = grpc_service_name(service)
        if grpc_service is None or counts.get(service, 0) == 0:
            continue
        section = getattr(settings, service)
        host, port = split_address(section.listen)
        step = settings.mesh.replica_port_step
        for index in range(counts[service]):
            metrics_listen = ""
            if section.metrics_listen:
                metrics_host, metrics_port = split_address(section.metrics_listen)
                metrics_listen = f"{metrics_host}:{metrics_port + index * step}"
            replicas.append(
                Replica(service, grpc_service, index, host, port + index * step, metrics_listen)
            )
    return replicas


def reachable_endpoint(listen: str) -> str:
    """The address a client on this host dials for a listener: a listener on every address
    (0.0.0.0, ::) is reached on loopback."""
    host, _, port = listen.rpartition(":")
    wildcard = host in ("0.0.0.0", "::", "[::]", "")  # nosec B104 (a comparison, not a bind)
    return f"{'127.0.0.1' if wildcard else host}:{port}"


@dataclass(frozen=True)
class MeshState:
    """What `ragmesh up` writes for `ragmesh status` to read."""

    replicas: list[Replica]
    client_listen: str
    admin_listen: str
    pids: dict[str, int]
    # Per child: how often the supervisor restarted it, and how it last exited ("" never).
    restarts: dict[str, int] = field(default_factory=dict)
    last_exit: dict[str, str] = field(default_factory=dict)
    # Envoy's admin unix socket ("" when admin is on admin_listen itself).
    admin_socket: str = ""

    def write(self, path: Path) -> None:
        """Replaced atomically: `ragmesh status` never reads half a file."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> MeshState:
        raw = json.loads(path.read_text())
        return cls(
            replicas=[Replica(**replica) for replica in raw["replicas"]],
            client_listen=raw["client_listen"],
            admin_listen=raw["admin_listen"],
            pids=raw["pids"],
            restarts=raw.get("restarts", {}),
            last_exit=raw.get("last_exit", {}),
            admin_socket=raw.get("admin_socket", ""),
        )
