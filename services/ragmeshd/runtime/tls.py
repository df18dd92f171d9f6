"""gRPC credentials from the mesh's certificate files, which servers only read: `ragmesh up`
and `ragmesh certs` make them (ragmeshd/pki/certs.py), a Kubernetes Secret mounts them.

Servers require a client certificate signed by the ragmesh CA, so a plaintext connection or a
TLS one without a certificate is refused during the handshake. Channels present a client
certificate and verify the server against the same CA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from ragmeshd.identities import service_dns_name
from ragmeshd.runtime.client_tls import ReloadingChannelCredentials
from ragmeshd.runtime.tls_reload import read_matching_pair, reloading_server_credentials
from ragmeshd.settings import Settings
from ragmeshd.state import CertificatePaths, Identity, MeshLayout


def channel_credentials(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    """A client's credentials: trust the ragmesh CA and present `cert` as this caller (read
    with its key as a matching pair: a renewal replaces the two files one after the other)."""
    cert_pem, key_pem = read_matching_pair(cert, key)
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(), private_key=key_pem, certificate_chain=cert_pem
    )


def replica_server_name(service: str) -> str:
    """The name a client verifies when it dials a replica of `service` directly by address.

    A service's server certificate names only `<service>.ragmesh.internal` (no localhost, no
    IP), the name Envoy verifies too, so every direct dial (health probes in `up`/`status`, the
    OpenAI adapter's probe, tests) states that name instead of the address it connects to.
    """
    return service_dns_name(service)


def replica_channel_options(service: str) -> list[tuple[str, Any]]:
    """gRPC channel options that make a secure channel to a replica of `service` verify (and
    send as SNI) its DNS name while connecting to an address."""
    return [("grpc.ssl_target_name_override", replica_server_name(service))]


def peer_uris(context: grpc.aio.ServicerContext) -> list[str]:
    """The URI SANs of the calling peer's certificate (e.g. spiffe://ragmesh.internal/...).

    Empty for a connection without TLS. Lets a handler or interceptor tell Envoy's client
    certificate (identities.identity_uri("envoy", "envoy-upstream")) from any other CA-signed one.
    """
    sans = context.auth_context().get("x509_subject_alternative_name", [])
    names = [name.decode() if isinstance(name, bytes) else str(name) for name in sans]
    return [name for name in names if name.startswith("spiffe://")]


class MissingCertificateError(FileNotFoundError):
    """A certificate this process needs is not there; the message says how to make it."""


def mesh_certificates(settings: Settings) -> CertificatePaths:
    """The paths of the mesh's certificates under the state directory. Nothing is made here:
    `ragmesh up` (or `ragmesh certs client`) makes them and checks their expiry."""
    return MeshLayout(settings.state_dir).certificates()


def existing(identity: Identity, role: str) -> Identity:
    """`identity` when both its files exist, else MissingCertificateError naming them."""
    if not identity.exists():
        raise MissingCertificateError(
            f"the {role} certificate {identity.cert} (or its key) is missing; `ragmesh up`"
            " makes the mesh's certificates in the state folder"
        )
    return identity


def server_credentials_for(settings: Settings, service: str) -> grpc.ServerCredentials | None:
    """`service`'s server credentials when the mesh runs with TLS, else None (plaintext).
    They re-read the certificate files when these are renewed (ragmeshd/runtime/tls_reload.py)."""
    if not settings.mesh.tls:
        return None
    mounted = settings.mounted_certs.server_dir
    if mounted:
        return reloading_server_credentials(*_mounted_files(Path(mounted)))
    certs = mesh_certificates(settings)
    identity = existing(certs.services[service], f"{service} server")
    return reloading_server_credentials(identity.cert, identity.key, certs.ca)


def caller_credentials_for(settings: Settings, service: str) -> grpc.ChannelCredentials | None:
    """The credentials `service` presents when it calls another service through Envoy's
    internal listener, or None without TLS. A channel opened with them (channels.open_channel)
    follows their files when cert-manager or `ragmesh certs renew` replaces them
    (ragmeshd/runtime/client_tls.py)."""
    if not settings.mesh.tls:
        return None
    mounted = settings.mounted_certs.client_dir
    if mounted:
        cert, key, ca = _mounted_files(Path(mounted))
        return ReloadingChannelCredentials(cert, key, ca)
    certs = mesh_certificates(settings)
    identity = existing(certs.service_clients[service], f"{service} client")
    return ReloadingChannelCredentials(identity.cert, identity.key, certs.ca)


def _mounted_files(directory: Path) -> tuple[Path, Path, Path]:
    """Certificate, key and CA in a cert-manager Secret's layout (a kubernetes.io/tls Secret)."""
    return directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
