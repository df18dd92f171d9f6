"""The state folder's layout: where every file of a mesh lies under STATE_DIR, in one place.

`ragmesh up` writes these files; the servers, `ragmesh status`, the benches and the CLI read
them. Certificates by role (the code that issues them, ragmeshd/pki, and the code that only
reads them, the servers' TLS credentials, share this layout, so a server finds its files
without being able to make any: only `ragmesh up` and `ragmesh certs` hold the CA), keys,
unix sockets, logs, the rendered Envoy configuration and the running mesh's description.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ragmeshd.identities import ENVOY, ENVOY_UPSTREAM

# The services that get a server certificate and a client certificate of their own.
DEFAULT_SERVICES = ("embeddings", "search", "llm", "coordinator", "openai")
# The user's client certificate made with the mesh, clients/client.pem.
DEFAULT_CLIENT = "client"
# User certificates live in a folder of their own, so user names never collide with
# ragmesh's identities.
CLIENTS_DIR = "clients"


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key."""

    cert: Path
    key: Path

    def exists(self) -> bool:
        return self.cert.exists() and self.key.exists()


@dataclass(frozen=True)
class CertificatePaths:
    """Every file of the mesh's certificates, by role."""

    ca: Path
    envoy: Identity  # Envoy's server certificate, on both listeners
    envoy_upstream: Identity  # the client certificate Envoy presents to services
    client: Identity  # the user's client certificate, clients/client.pem
    services: Mapping[str, Identity] = field(default_factory=dict)  # server certificates
    service_clients: Mapping[str, Identity] = field(default_factory=dict)  # services as callers

    def all(self) -> Iterator[Identity]:
        yield self.envoy
        yield self.envoy_upstream
        yield from self.services.values()
        yield from self.service_clients.values()
        yield self.client


def certificate_paths(
    certs_dir: Path, services: Sequence[str] = DEFAULT_SERVICES
) -> CertificatePaths:
    """The paths of every certificate under `certs_dir` (whether or not they exist yet)."""

    def pair(stem: str) -> Identity:
        return Identity(certs_dir / f"{stem}.pem", certs_dir / f"{stem}-key.pem")

    return CertificatePaths(
        ca=certs_dir / "ca.pem",
        envoy=pair(ENVOY),
        envoy_upstream=pair(ENVOY_UPSTREAM),
        services={service: pair(service) for service in services},
        service_clients={service: pair(f"{service}-client") for service in services},
        client=client_identity(certs_dir, DEFAULT_CLIENT),
    )


def client_identity(certs_dir: Path, name: str) -> Identity:
    """Where a user's client certificate `name` lies."""
    folder = certs_dir / CLIENTS_DIR
    return Identity(folder / f"{name}.pem", folder / f"{name}-key.pem")


@dataclass(frozen=True)
class MeshLayout:
    """Every path of one mesh's state folder."""

    state_dir: Path

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def certs_dir(self) -> Path:
        return self.state_dir / "certs"

    @property
    def keys_dir(self) -> Path:
        """The key store (keys.json) and the admin key `up` makes on first start."""
        return self.state_dir / "keys"

    @property
    def admin_key(self) -> Path:
        return self.keys_dir / "admin.key"

    @property
    def run_dir(self) -> Path:
        """Unix sockets and pid files of a running mesh."""
        return self.state_dir / "run"

    @property
    def ratelimit_socket(self) -> Path:
        """The unix socket the rate-limit service listens on and Envoy calls."""
        return self.run_dir / "ratelimit.sock"

    @property
    def envoy_admin_socket(self) -> Path:
        """Envoy's admin interface: a unix socket only the mesh's user can open."""
        return self.run_dir / "envoy-admin.sock"

    @property
    def models_dir(self) -> Path:
        """Embedding models converted to faster runtimes, reused across starts."""
        return self.state_dir / "models"

    @property
    def qdrant_edge_dir(self) -> Path:
        """The Qdrant backend's documents by default: Qdrant's engine in-process, one
        EdgeShard per collection (search/backends/qdrant_edge.py)."""
        return self.state_dir / "qdrant-edge"

    @property
    def envoy_config(self) -> Path:
        return self.state_dir / "envoy" / "envoy.yaml"

    @property
    def mesh_state(self) -> Path:
        """Written by `up` while the mesh runs, read by `status`."""
        return self.state_dir / "mesh.json"

    @property
    def prometheus_config(self) -> Path:
        """A Prometheus scrape configuration for the running mesh."""
        return self.state_dir / "prometheus.yml"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def certificates(self) -> CertificatePaths:
        return certificate_paths(self.certs_dir)
