"""Rotating the mesh CA on Kubernetes, simulated (docs/kubernetes.md, "Rotate the mesh CA"):
what cert-manager, trust-manager and the kubelet do at each step, with real handshakes
between a server and a client that read their files as the pods do (a certificate, its key
and the projected trust bundle as ca.crt). At no step do two pods distrust each other, and
after the old CA is dropped, a leaf it signed is refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import grpc
import pytest

from ragmeshd.identities import identity_uri, service_dns_name
from ragmeshd.pki import authority, certs
from ragmeshd.runtime.channels import open_channel
from ragmeshd.runtime.client_tls import ReloadingChannelCredentials
from ragmeshd.runtime.tls_reload import reloading_server_credentials
from ragmeshd.state import Identity
from tests.deploy.manifests import find, render

SERVER = "embeddings"


class Cluster:
    """Secrets by name, each with its labels; trust-manager's bundle from them; pods' files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.secrets: dict[str, tuple[dict[str, str], certs.CertificateAuthority]] = {}
        (self.bundle_doc,) = find(render("cluster"), "Bundle")
        (self.ca_doc,) = [
            c for c in find(render("production"), "Certificate") if c["spec"].get("isCA")
        ]

    def issue_ca(self, secret_name: str) -> certs.CertificateAuthority:
        """cert-manager issuing a CA Certificate like ragmesh-ca (new key) into `secret_name`."""
        folder = self.root / secret_name
        paths = certs.ensure_certificates(folder)
        ca = authority.load_ca(paths.ca, folder / "ca-key.pem", need_key=True)
        labels = self.ca_doc["spec"]["secretTemplate"]["labels"]
        self.secrets[secret_name] = (labels, ca)
        return ca

    def bundle(self) -> bytes:
        """trust-manager: the `key` of every Secret its source's selector matches."""
        (source,) = self.bundle_doc["spec"]["sources"]
        wanted = source["secret"]["selector"]["matchLabels"]
        return b"".join(
            (self.root / name / "ca.pem").read_bytes()
            for name, (labels, _) in sorted(self.secrets.items())
            if wanted.items() <= labels.items()
        )


class PodFiles:
    """A pod's projected TLS volume: tls.crt, tls.key and ca.crt, swapped as the kubelet does."""

    def __init__(self, folder: Path, cluster: Cluster, server: bool) -> None:
        self.folder, self.cluster, self.server = folder, cluster, server
        folder.mkdir(parents=True)
        self.version = 0

    def write(self, ca: certs.CertificateAuthority) -> None:
        """A leaf from `ca` (cert-manager reissuing) with the current bundle."""
        self.version += 1
        staging = self.folder / f"..v{self.version}"
        identity = Identity(staging / "tls.crt", staging / "tls.key")
        if self.server:
            spec = certs.LeafSpec(
                identity, SERVER, (service_dns_name(SERVER),), identity_uri("service", SERVER), True
            )
        else:
            spec = certs.LeafSpec(identity, "client", (), identity_uri("client", "client"), False)
        certs.issue_leaf(ca, spec, valid_days=1)
        self._publish(staging)

    def refresh_bundle(self) -> None:
        """trust-manager updated the ConfigMap: the kubelet republishes the volume."""
        current = (self.folder / "..data").resolve()
        self.version += 1
        staging = self.folder / f"..v{self.version}"
        shutil.copytree(current, staging)
        self._publish(staging)

    def _publish(self, staging: Path) -> None:
        (staging / "ca.crt").write_bytes(self.cluster.bundle())
        (self.folder / "..tmp").symlink_to(staging.name)
        os.rename(self.folder / "..tmp", self.folder / "..data")
        for name in ("tls.crt", "tls.key", "ca.crt"):
            if not (self.folder / name).is_symlink():
                (self.folder / name).symlink_to(Path("..data") / name)

    def files(self) -> tuple[Path, Path, Path]:
        return self.folder / "tls.crt", self.folder / "tls.key", self.folder / "ca.crt"


async def _handshake(server: PodFiles, client: PodFiles) -> bool:
    """A call from `client` to `server`, each with the files as they are now."""
    grpc_server = grpc.aio.server()
    grpc_server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(_echo)}
            )
        ]
    )
    port = grpc_server.add_secure_port("127.0.0.1:0", reloading_server_credentials(*server.files()))
    await grpc_server.start()
    cert, key, ca = client.files()
    channel = open_channel(
        f"127.0.0.1:{port}",
        ReloadingChannelCredentials(cert, key, ca),
        [("grpc.ssl_target_name_override", service_dns_name(SERVER))],
    )
    try:
        await channel.unary_unary("/test.Echo/Call")(b"ping", timeout=5)
        return True
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        return False
    finally:
        await channel.close()
        await grpc_server.stop(None)


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path / "cluster")


async def test_a_ca_rotation_never_splits_trust(cluster: Cluster, tmp_path: Path) -> None:
    old = cluster.issue_ca("ragmesh-ca")
    server = PodFiles(tmp_path / "server", cluster, server=True)
    client = PodFiles(tmp_path / "client", cluster, server=False)
    server.write(old)
    client.write(old)
    assert await _handshake(server, client)

    # Without the bundle step, a leaf of a new CA is refused by a pod that trusts the old one:
    # what cert-manager's default CA key rotation did to a mesh trusting each Secret's ca.crt.
    stranger = PodFiles(tmp_path / "stranger", cluster, server=False)
    stranger.write(certs_from_new_ca(cluster, tmp_path / "unlabelled"))
    assert not await _handshake(server, stranger)

    # 1. The next CA (a Certificate like ragmesh-ca, its Secret labelled alike): trust-manager
    #    adds it to the bundle and the kubelet republishes every pod's ca.crt.
    new = cluster.issue_ca("ragmesh-ca-next")
    for pod in (server, client):
        pod.refresh_bundle()
    assert await _handshake(server, client)
    # 2. The Issuer signs with the next CA; leaves are reissued one by one. Mixed pairs work
    #    both ways while the bundle holds both CAs.
    client.write(new)
    assert await _handshake(server, client)
    server.write(new)
    old_client = PodFiles(tmp_path / "late", cluster, server=False)
    old_client.write(old)
    assert await _handshake(server, old_client)
    assert await _handshake(server, client)
    # 3. Every leaf reissued: the old CA's Secret is deleted, the bundle shrinks to the new CA,
    #    and a leaf of the old CA is refused from then on.
    del cluster.secrets["ragmesh-ca"]
    for pod in (server, client, old_client):
        pod.refresh_bundle()
    assert await _handshake(server, client)
    assert not await _handshake(server, old_client)


def certs_from_new_ca(cluster: Cluster, folder: Path) -> certs.CertificateAuthority:
    """A CA that the bundle does not carry (its Secret has no label)."""
    paths = certs.ensure_certificates(folder)
    return authority.load_ca(paths.ca, folder / "ca-key.pem", need_key=True)
