"""Envoy's configuration for Kubernetes, rendered from the manifests' own settings by the
command Envoy's init container runs, and checked by Envoy itself (`envoy --mode validate`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragmeshd.envoy.config import validate_config
from ragmeshd.envoy.kubernetes import (
    kubernetes_topology,
    service_host,
    write_kubernetes_config,
)
from ragmeshd.envoy.security import KEYLESS_PATHS
from ragmeshd.envoy.topology import OPENAI_PATHS
from ragmeshd.identities import service_dns_name
from ragmeshd.pki.certs import ensure_certificates
from ragmeshd.settings import load_settings
from tests.deploy.manifests import Container, Doc, containers, find, one, render
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
    _check_openai_and_ratelimit(clusters, config, env)
    listeners = {
        listener["name"]: listener["address"]["socket_address"]
        for listener in config["static_resources"]["listeners"]
    }
    assert listeners["internal"]["address"] == "0.0.0.0"
    # The kubelet's plaintext probe listener, where the Deployment's probes look for it.
    (envoy,) = [c for c in containers(docs) if c.deployment == "envoy" and not c.init]
    assert listeners["probe"]["port_value"] == envoy.spec["readinessProbe"]["httpGet"]["port"]
    _check_admin_locked_down(config, docs, envoy, argv, listeners)
    assert sorted(p.name for p in (out.parent / "sds").iterdir()) == [
        "envoy_server.yaml",
        "envoy_upstream.yaml",
        "mesh_ca.yaml",
    ]


def _client_routes(config: dict[str, Any], name: str) -> dict[str, Any]:
    (listener,) = [x for x in config["static_resources"]["listeners"] if x["name"] == name]
    (manager,) = listener["filter_chains"][0]["filters"]
    return dict(manager["typed_config"])


def _check_openai_and_ratelimit(
    clusters: dict[str, Any], config: dict[str, Any], env: dict[str, str]
) -> None:
    """The adapter's paths and the rate-limit filter, as `ragmesh up` renders them, with the
    pods behind the headless Services "openai" and "ratelimit" as hosts."""
    for name, setting, protocol in (
        ("openai", "RAGMESH_OPENAI__LISTEN", "http_protocol_options"),
        ("ratelimit", "RAGMESH_RATELIMIT__LISTEN", "http2_protocol_options"),
    ):
        cluster = clusters[name]
        assert cluster["type"] == "STRICT_DNS"
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert address["address"] == service_host(name, "ragmesh")
        assert address["port_value"] == int(env[setting].rsplit(":", 1)[1])
        options = cluster["typed_extension_protocol_options"]
        http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert protocol in http["explicit_http_config"]
        # mTLS with Envoy's upstream certificate; the server must be <name>.ragmesh.internal.
        tls = cluster["transport_socket"]["typed_config"]
        assert tls["sni"] == service_dns_name(name)
        common = tls["common_tls_context"]
        assert common["tls_certificate_sds_secret_configs"][0]["name"] == "envoy_upstream"
        assert cluster["health_checks"], name
    client = _client_routes(config, "client")
    routes = client["route_config"]["virtual_hosts"][0]["routes"]
    to_openai = {
        r["match"].get("path") or r["match"].get("prefix")
        for r in routes
        if r.get("route", {}).get("cluster") == "openai"
    }
    # With the key-less documentation routes (/openapi.json, /docs), as under `ragmesh up`.
    assert to_openai == set(OPENAI_PATHS) | set(KEYLESS_PATHS)
    filters = [f["name"] for f in client["http_filters"]]
    assert "envoy.filters.http.ratelimit" in filters
    (ratelimit,) = [
        f for f in client["http_filters"] if f["name"] == "envoy.filters.http.ratelimit"
    ]
    grpc_service = ratelimit["typed_config"]["rate_limit_service"]["grpc_service"]
    assert grpc_service["envoy_grpc"]["cluster_name"] == "ratelimit"
    assert client["route_config"]["virtual_hosts"][0]["rate_limits"]
    # Services' own calls are not limited per key, and nothing routes to the rate-limit service.
    internal = _client_routes(config, "internal")
    assert "envoy.filters.http.ratelimit" not in [f["name"] for f in internal["http_filters"]]
    for manager in (client, internal):
        for route in manager["route_config"]["virtual_hosts"][0]["routes"]:
            assert route.get("route", {}).get("cluster") != "ratelimit"


def _check_admin_locked_down(
    config: dict[str, Any],
    docs: list[Doc],
    envoy: Container,
    argv: list[str],
    listeners: dict[str, Any],
) -> None:
    """Admin is a 0600 unix socket on a volume only the Envoy container mounts (its preStop
    hook reaches it there); the pod's network sees the client, internal, probe and metrics
    listeners, and the metrics listener forwards GET /stats/prometheus and nothing else."""
    socket = argv[argv.index("--admin-socket") + 1]
    assert config["admin"]["address"] == {"pipe": {"path": socket, "mode": 0o600}}
    mounts = {path for path, volume in envoy.mounts() if "emptyDir" in volume}
    assert str(Path(socket).parent) in mounts
    pre_stop = envoy.spec["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[pre_stop.index("--admin-socket") + 1] == socket
    remote = {name for name, address in listeners.items() if address["address"] != "127.0.0.1"}
    assert remote == {"client", "internal", "probe", "metrics"}
    ports = {p["name"]: p["containerPort"] for p in envoy.spec["ports"]}
    assert listeners["metrics"]["port_value"] == ports["metrics"]
    service = one(docs, "Service", "envoy-metrics")
    assert [p["port"] for p in service["spec"]["ports"]] == [ports["metrics"]]
    assert "metrics" not in {p["name"] for p in one(docs, "Service", "envoy")["spec"]["ports"]}
    routes = _client_routes(config, "metrics")["route_config"]["virtual_hosts"][0]["routes"]
    forwarded = [r for r in routes if "route" in r]
    assert [(r["match"]["path"], r["route"]["cluster"]) for r in forwarded] == [
        ("/stats/prometheus", "envoy_admin")
    ]
    assert forwarded[0]["match"]["headers"][0]["string_match"] == {"exact": "GET"}
    assert routes[-1] == {"match": {"prefix": "/"}, "direct_response": {"status": 403}}


def test_the_cluster_domain_comes_from_the_settings_not_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Envoy's init container passes CLUSTER_DOMAIN (settings.env) as --cluster-domain, and
    every per-pod cluster resolves <service>.<namespace>.svc.<that domain>."""
    docs = render("production")
    (init,) = [c for c in containers(docs) if c.deployment == "envoy" and c.init]
    env = init.env(docs, secrets={})
    assert env["CLUSTER_DOMAIN"] == "cluster.local"
    env["CLUSTER_DOMAIN"] = "corp.example"
    argv = init.argv(env)
    assert argv[argv.index("--cluster-domain") + 1] == "corp.example"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    topology = kubernetes_topology(
        load_settings(), namespace="team-a", cluster_domain="corp.example", sds_dir=tmp_path
    )
    hosts = {host for cluster in topology.clusters for host, _ in cluster.endpoints}
    assert hosts == {
        f"{s}.team-a.svc.corp.example" for s in ("embeddings", "search", "coordinator")
    }
    assert topology.ratelimit_endpoint is not None
    assert topology.ratelimit_endpoint[0] == "ratelimit.team-a.svc.corp.example"
    with pytest.raises(ValueError, match="not a DNS domain"):
        kubernetes_topology(load_settings(), cluster_domain="$(CLUSTER_DOMAIN)", sds_dir=tmp_path)


def test_the_local_model_gets_a_cluster_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """components/llm-local: the settings name the coordinator's LLM target, so Envoy's init
    container adds an llm cluster over the llm headless Service, which Envoy validates."""
    docs = render("production+llm-local")
    (init,) = [c for c in containers(docs) if c.deployment == "envoy" and c.init]
    env = init.env(docs, secrets={})
    certs = ensure_certificates(tmp_path / "certs")
    for folder, identity in (("server", certs.envoy), ("client", certs.envoy_upstream)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "tls.crt").symlink_to(identity.cert)
        (tmp_path / folder / "tls.key").symlink_to(identity.key)
        (tmp_path / folder / "ca.crt").symlink_to(certs.ca)
    env["RAGMESH_MOUNTED_CERTS__SERVER_DIR"] = str(tmp_path / "server")
    env["RAGMESH_MOUNTED_CERTS__CLIENT_DIR"] = str(tmp_path / "client")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "envoy" / "envoy.yaml"
    out.parent.mkdir()
    topology = kubernetes_topology(load_settings(), sds_dir=out.parent / "sds")
    write_kubernetes_config(topology, out, "0.0.0.0:8099")
    validate_config(out)
    clusters = {
        c["name"]: c for c in yaml.safe_load(out.read_text())["static_resources"]["clusters"]
    }
    (endpoint,) = clusters["llm"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    llm = one(docs, "Service", "llm")
    assert address["address"] == service_host("llm", "ragmesh")
    assert address["port_value"] == llm["spec"]["ports"][0]["port"]
    (server,) = [
        c for c in find(docs, "Certificate") if c["spec"]["secretName"] == "ragmesh-llm-tls"
    ]
    assert server["spec"]["dnsNames"] == [service_dns_name("llm")]
    # Without the component there is no llm cluster (and no pod behind one).
    plain = render("production")
    (init,) = [c for c in containers(plain) if c.deployment == "envoy" and c.init]
    assert "RAGMESH_COORDINATOR__LLM_TARGET" not in init.env(plain, secrets={})
