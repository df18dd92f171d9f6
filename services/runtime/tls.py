"""gRPC credentials from the mesh's certificate files (services/mesh/certs.py makes them).

Servers require a client certificate signed by the ragmesh CA, so a plaintext connection or a
TLS one without a certificate is refused during the handshake. Channels present a client
certificate and verify the server against the same CA.
"""

from __future__ import annotations

from pathlib import Path

import grpc


def server_credentials(cert: Path, key: Path, ca: Path) -> grpc.ServerCredentials:
    """A server's credentials: its certificate, and a client certificate required of peers."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=ca.read_bytes(),
        require_client_auth=True,
    )


def channel_credentials(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    """A client's credentials: trust the ragmesh CA and present `cert` as this caller."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )


def peer_uris(context: grpc.aio.ServicerContext) -> list[str]:
    """The URI SANs of the calling peer's certificate (e.g. spiffe://ragmesh.internal/...).

    Empty for a connection without TLS. Lets a handler or interceptor tell Envoy's client
    certificate (certs.identity_uri("envoy", "envoy-upstream")) from any other CA-signed one.
    """
    sans = context.auth_context().get("x509_subject_alternative_name", [])
    names = [name.decode() if isinstance(name, bytes) else str(name) for name in sans]
    return [name for name in names if name.startswith("spiffe://")]
