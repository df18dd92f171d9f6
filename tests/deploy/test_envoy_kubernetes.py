"""Envoy's configuration for Kubernetes, rendered from the manifests' own settings by the
command Envoy's init container runs, and checked by Envoy itself (`envoy --mode validate`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from services.mesh.certs import ensure_certificates
from services.mesh.envoy_config import validate_config
from services.mesh.kubernetes import service_host
from tests.deploy.manifests import containers, render
from tests.helpers import ragmesh_command


def test_rendered_for_kubernetes_validates_with_per_pod_clusters(tmp_path: Path) -> None:
    docs = render("production")
    (init,) = [c for c in containers(docs) if c.deployment == "envoy" and c.init]
    env = init.env(docs, secrets={})
    certs = ensure_certificates(tmp_path / "certs")
    server, client = tmp_path / "server", tmp_path / "client"
    for folder, identity in ((server, certs.envoy), (client, certs.envoy_upstream)):
        folder.mkdir()
        (folder / "tls.crt").symlink_to(identity.cert)
        (folder / "tls.key").symlink_to(identity.key)
        (folder / "ca.crt").symlink_to(certs.ca)
    env["RAGMESH_MOUNTED_CERTS__SERVER_DIR"] = str(server)
    env["RAGMESH_MOUNTED_CERTS__CLIENT_DIR"] = str(client)
    out = tmp_path / "envoy" / "envoy.yaml"
    argv = init.argv(env)
    argv[argv.index("--out") + 1] = str(out)
    assert argv[:3] == ["ragmesh", "kubernetes", "envoy-config"]
    subprocess.run([*ragmesh_command(*argv[1:])], env={**os.environ, **env}, check=True, timeout=60)
    validate_config(out)

    config = yaml.safe_load(out.read_text())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for service in ("embeddings", "search", "coordinator"):
        cluster = clusters[service]
        # One host per pod: DNS of the headless Service, re-resolved by Envoy.
        assert cluster["type"] == "STRICT_DNS"
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert address["address"] == service_host(service, "ragmesh")
        port = int(env[f"RAGMESH_{service.upper()}__LISTEN"].rsplit(":", 1)[1])
        assert address["port_value"] == port
        tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        assert tls["tls_certificate_sds_secret_configs"][0]["name"] == "envoy_upstream"
    listeners = {
        listener["name"]: listener["address"]["socket_address"]
        for listener in config["static_resources"]["listeners"]
    }
    assert listeners["internal"]["address"] == "0.0.0.0"
    # The kubelet's plaintext probe listener, where the Deployment's probes look for it.
    (envoy,) = [c for c in containers(docs) if c.deployment == "envoy" and not c.init]
    assert listeners["probe"]["port_value"] == envoy.spec["readinessProbe"]["httpGet"]["port"]
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert sorted(p.name for p in (out.parent / "sds").iterdir()) == [
        "envoy_server.yaml",
        "envoy_upstream.yaml",
        "mesh_ca.yaml",
    ]
