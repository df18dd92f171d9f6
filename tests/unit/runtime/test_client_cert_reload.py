"""A service's outbound channel follows its renewed client certificate (issue 26): the
kubelet swaps a mounted Secret's `..data` link to a folder with the new pair, and every call
made after that presents the new certificate, with no call failing on the way. A pair
replaced one file at a time (`ragmesh certs renew` writes the key, then the certificate) is
taken only once the two match."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from ragmeshd.identities import identity_uri
from ragmeshd.pki import authority, certs
from ragmeshd.runtime.channels import open_channel
from ragmeshd.runtime.tls import caller_credentials_for, replica_channel_options
from ragmeshd.runtime.tls_reload import reloading_server_credentials
from ragmeshd.settings import load_settings
from ragmeshd.state import Identity

METHOD = "/test.Peer/Serial"
SERVER = "embeddings"  # any server certificate of the mesh will do
CALLS_PER_PHASE = 40


async def _peer_serial(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """Answers with the serial of the certificate the caller presented."""
    (pem,) = context.auth_context()["x509_pem_cert"]
    return b"%x" % x509.load_pem_x509_certificate(pem).serial_number


class Mesh:
    """A CA, a server that echoes its caller's certificate serial, and a client's Secret
    mounted as the kubelet mounts it: files linked through `..data` to a timestamped folder."""

    def __init__(self, root: Path) -> None:
        self.paths = certs.ensure_certificates(root / "certs")
        self.ca = authority.load_ca(self.paths.ca, root / "certs" / "ca-key.pem", need_key=True)
        self.mounted = root / "mounted"
        self.mounted.mkdir()
        self.versions = 0
        self.swap()
        for name in ("tls.crt", "tls.key", "ca.crt"):
            (self.mounted / name).symlink_to(Path("..data") / name)

    def issue(self, folder: Path) -> int:
        identity = Identity(folder / "tls.crt", folder / "tls.key")
        spec = certs.LeafSpec(
            identity, "search-client", (), identity_uri("service", "search"), is_server=False
        )
        certs.issue_leaf(self.ca, spec, valid_days=1)
        return x509.load_pem_x509_certificate(identity.cert.read_bytes()).serial_number

    def swap(self) -> int:
        """What the kubelet does with an updated Secret: the new files in a new folder, then
        `..data` renamed over in one step, then the old folder removed."""
        self.versions += 1
        folder = self.mounted / f"..2026_12_06_00_00_{self.versions:02d}.000000001"
        folder.mkdir()
        serial = self.issue(folder)
        shutil.copy(self.paths.ca, folder / "ca.crt")
        previous = (self.mounted / "..data").resolve() if self.versions > 1 else None
        (self.mounted / "..data_tmp").symlink_to(folder.name)
        os.rename(self.mounted / "..data_tmp", self.mounted / "..data")
        if previous is not None:
            shutil.rmtree(previous)
        return serial


@pytest.fixture
def mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Mesh:
    made = Mesh(tmp_path)
    monkeypatch.setenv("RAGMESH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAGMESH_MESH__TLS", "true")
    monkeypatch.setenv("RAGMESH_MOUNTED_CERTS__CLIENT_DIR", str(made.mounted))
    return made


async def _server(mesh: Mesh) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_peer_serial)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Peer", {"Serial": handler})]
    )
    identity = mesh.paths.services[SERVER]
    credentials = reloading_server_credentials(identity.cert, identity.key, mesh.paths.ca)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _traffic(call: object, phase: dict[str, int], seen: list[tuple[int, int]]) -> None:
    """Calls one after another, each noting the phase it started in and the serial it showed."""
    while phase["stop"] == 0:
        started_in = phase["now"]
        answer = await call(b"", timeout=10)  # type: ignore[operator]
        seen.append((started_in, int(answer, 16)))


def _calls_in(seen: list[tuple[int, int]], phase: int) -> int:
    return sum(1 for started_in, _ in seen if started_in == phase)


async def _until(seen: list[tuple[int, int]], phase: int, workers: list[asyncio.Task]) -> None:
    while _calls_in(seen, phase) < CALLS_PER_PHASE:
        assert not any(w.done() for w in workers), [w.exception() for w in workers if w.done()]
        await asyncio.sleep(0)


async def test_a_channel_presents_the_renewed_certificate_after_the_kubelets_swap(
    mesh: Mesh,
) -> None:
    server, target = await _server(mesh)
    first = x509.load_pem_x509_certificate((mesh.mounted / "tls.crt").read_bytes()).serial_number
    channel = open_channel(
        target, caller_credentials_for(load_settings(), "search"), replica_channel_options(SERVER)
    )
    call = channel.unary_unary(METHOD)
    phase = {"now": 1, "stop": 0}
    seen: list[tuple[int, int]] = []
    workers = [asyncio.create_task(_traffic(call, phase, seen)) for _ in range(4)]
    try:
        await _until(seen, 1, workers)
        renewed = mesh.swap()
        phase["now"] = 2
        await _until(seen, 2, workers)
    finally:
        phase["stop"] = 1
        done = await asyncio.gather(*workers, return_exceptions=True)
        await channel.close()
        await server.stop(None)
    # Under traffic no call failed, and every call made after the swap showed the new one.
    assert [result for result in done if result is not None] == []
    assert {serial for started_in, serial in seen if started_in == 1} == {first}
    assert {serial for started_in, serial in seen if started_in == 2} == {renewed}
    assert renewed != first


async def test_a_half_replaced_pair_keeps_the_current_certificate(mesh: Mesh) -> None:
    server, target = await _server(mesh)
    channel = open_channel(
        target, caller_credentials_for(load_settings(), "search"), replica_channel_options(SERVER)
    )
    call = channel.unary_unary(METHOD)
    try:
        first = int(await call(b"", timeout=10), 16)
        # A new pair written in place, key first (as `ragmesh certs renew` does): in between,
        # the key on disk is not the certificate's.
        staging = mesh.mounted.parent / "staging"
        staging.mkdir()
        renewed = mesh.issue(staging)
        current = (mesh.mounted / "..data").resolve()
        os.replace(staging / "tls.key", current / "tls.key")
        assert int(await call(b"", timeout=10), 16) == first
        os.replace(staging / "tls.crt", current / "tls.crt")
        assert int(await call(b"", timeout=10), 16) == renewed
    finally:
        await channel.close()
        await server.stop(None)
