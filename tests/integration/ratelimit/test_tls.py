"""The rate-limit service as Kubernetes runs it (RAGMESH_RATELIMIT__LISTEN): a TCP port with
mutual TLS from a mounted cert-manager Secret, answering Envoy's client certificate only, since
its requests carry API keys. A real `ragmesh serve ratelimit` process."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from ragmeshd.identities import service_dns_name
from ragmeshd.pki import authority, certs
from ragmeshd.runtime.keystore import KeyStore, RateLimit
from ragmeshd.runtime.rls_messages import (
    METHOD,
    OK,
    OVER_LIMIT,
    SERVICE,
    RateLimitRequest,
    RateLimitResponse,
)
from ragmeshd.runtime.tls import channel_credentials
from tests.helpers import free_port, ragmesh_command, running_process, wait_serving


def _mounted_secret(ca_dir: Path, secret: Path) -> None:
    """The rate-limit service's Secret as cert-manager writes it (tls.crt, tls.key, ca.crt)."""
    ca_state = certs.ensure_certificates(ca_dir)
    ca = authority.load_ca(ca_state.ca, ca_dir / "ca-key.pem", need_key=True)
    secret.mkdir()
    identity = certs.Identity(secret / "tls.crt", secret / "tls.key")
    name = service_dns_name("ratelimit")
    uri = "spiffe://ragmesh.internal/service/ratelimit"
    certs.issue_leaf(ca, certs.LeafSpec(identity, "ratelimit", (name,), uri, is_server=True), 2)
    shutil.copy(ca_state.ca, secret / "ca.crt")


def test_only_envoy_is_answered_over_mutual_tls(tmp_path: Path) -> None:
    state, secret = tmp_path / "state", tmp_path / "secret"
    _mounted_secret(tmp_path / "ca", secret)
    mesh_certs = certs.certificate_paths(tmp_path / "ca")  # Envoy's and a service's, same CA
    limited = KeyStore(state / "keys").create("limited", rate=RateLimit(0.01, 1))
    listen, health = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {
        "RAGMESH_STATE_DIR": str(state),
        "RAGMESH_MESH__TLS": "true",
        "RAGMESH_RATELIMIT__LISTEN": listen,
        "RAGMESH_SERVER__HEALTH_LISTEN": health,
        "RAGMESH_MOUNTED_CERTS__SERVER_DIR": str(secret),
    }
    request = RateLimitRequest(domain="ragmesh")
    request.descriptors.add().entries.add(key="x-api-key", value=limited)

    def ask(identity: certs.Identity) -> RateLimitResponse:
        credentials = channel_credentials(mesh_certs.ca, identity.cert, identity.key)
        options = [("grpc.ssl_target_name_override", service_dns_name("ratelimit"))]
        with grpc.secure_channel(listen, credentials, options=options) as channel:
            call = channel.unary_unary(
                f"/{SERVICE}/{METHOD}",
                request_serializer=RateLimitRequest.SerializeToString,
                response_deserializer=RateLimitResponse.FromString,
            )
            return call(request, timeout=10)

    with running_process(
        ragmesh_command("serve", "ratelimit"), tmp_path / "ratelimit.log", env, listen
    ) as process:
        wait_serving(health, SERVICE, process)  # the kubelet's plaintext probe port
        # Envoy's client certificate: decisions, the key's burst of 1 then over its limit.
        assert ask(mesh_certs.envoy_upstream).overall_code == OK
        assert ask(mesh_certs.envoy_upstream).overall_code == OVER_LIMIT
        # A service's certificate: answered too (servers charge work to the key's bucket,
        # runtime/work_meter.py); the user's certificate from the same CA: refused.
        assert ask(mesh_certs.service_clients["search"]).overall_code == OVER_LIMIT
        with pytest.raises(grpc.RpcError) as refused:
            ask(mesh_certs.client)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
