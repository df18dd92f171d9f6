"""Where the mesh's certificate files lie under a certificates folder, by role.

The code that issues them (services/mesh/certs.py) and the code that only reads them (the
servers' TLS credentials, `ragmesh status`, the OpenAI adapter) share this layout, so a
server finds its files without being able to make any: only `ragmesh up` and `ragmesh certs`
hold the CA.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.identities import ENVOY, ENVOY_UPSTREAM

# The services that get a server certificate and a client certificate of their own.
DEFAULT_SERVICES = ("embeddings", "search", "coordinator", "openai")
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
