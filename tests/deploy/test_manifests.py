"""deploy/kubernetes/, rendered offline: Kubernetes schemas, custom resources, and the
agreement between the manifests and the code (names, ports, health names, certificates)."""

from __future__ import annotations

import os
import re
from typing import Any

import kubernetes_validate
import pytest

from ragmeshd.identities import identity_uri, service_dns_name
from ragmeshd.openai_compat.lifecycle import HEALTH_PATH, LIVENESS_PATH
from ragmeshd.openai_compat.server import SHUTDOWN_GRACE_S as OPENAI_SHUTDOWN_GRACE_S
from ragmeshd.runtime.rls_messages import SERVICE as RATELIMIT_SERVICE
from ragmeshd.runtime.server import LIVENESS_SERVICE
from ragmeshd.settings import load_settings
from ragmeshd.supervisor.plan import grpc_service_name
from tests.deploy import crds
from tests.deploy.manifests import (
    ALL_RENDERED,
    VARIANTS,
    Doc,
    containers,
    find,
    one,
    render,
    settings_map,
)

KUBERNETES_VERSION = "1.37.0"
SERVICES = ("embeddings", "search", "coordinator")
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms))+$")
# Secrets that the cluster's operators or the user make, not these manifests.
_OUTSIDE_SECRETS = {
    "ragmesh-api-keys": "the user (docs/kubernetes.md, API keys)",
    "ragmesh-external-db": "the user (components/external-postgres)",
    "ragmesh-external-db-ca": "the user (components/external-postgres)",
    "ragmesh-llm-remote": "the user (components/llm-remote)",
    "ragmesh-qdrant": "the user (components/qdrant)",
}
# ConfigMaps that operators make: trust-manager writes the Bundle's target into the namespace.
_BUNDLE_TARGETS = "Bundle"


def _check_issuer(doc: Doc, docs: list[Doc]) -> None:
    kinds = {"selfSigned", "ca", "acme", "vault", "venafi"} & set(doc["spec"])
    assert len(kinds) == 1, f"Issuer {doc['metadata']['name']} needs exactly one issuer type"
    if "ca" in kinds:
        secret = doc["spec"]["ca"]["secretName"]
        assert any(c["spec"]["secretName"] == secret for c in find(docs, "Certificate"))


def _check_certificate(doc: Doc, docs: list[Doc]) -> None:
    spec, name = doc["spec"], doc["metadata"]["name"]
    assert spec["secretName"], name
    issuer = spec["issuerRef"]
    assert issuer.get("kind", "Issuer") == "Issuer" and one(docs, "Issuer", issuer["name"])
    assert {"commonName", "dnsNames", "uris", "ipAddresses"} & set(spec), name
    for field in ("duration", "renewBefore"):
        assert field not in spec or _GO_DURATION.match(spec[field]), (name, field)
    assert spec.get("privateKey", {}).get("algorithm", "RSA") in {"RSA", "ECDSA", "Ed25519"}
    allowed = {"digital signature", "key encipherment", "server auth", "client auth", "cert sign"}
    assert set(spec.get("usages", [])) <= allowed, (name, spec.get("usages"))


def _check_cnpg_cluster(doc: Doc, docs: list[Doc]) -> None:
    spec = doc["spec"]
    assert isinstance(spec["instances"], int) and spec["instances"] >= 1
    assert re.match(r"^\d+[KMGT]i$", spec["storage"]["size"])
    if "recovery" in spec["bootstrap"]:
        # components/restore: recovered from a source this Cluster names.
        source = spec["bootstrap"]["recovery"]["source"]
        assert source in {c["name"] for c in spec["externalClusters"]}
        return
    initdb = spec["bootstrap"]["initdb"]
    assert initdb["database"] and initdb["owner"]
    assert any("vector" in sql for sql in initdb.get("postInitApplicationSQL", []))


def _check_service_monitor(doc: Doc, docs: list[Doc]) -> None:
    spec = doc["spec"]
    selected = [
        s
        for s in find(docs, "Service")
        if s["metadata"].get("labels", {}).get("app.kubernetes.io/name")
        in spec["selector"]["matchExpressions"][0]["values"]
    ]
    assert selected, "the ServiceMonitor selects no Service"
    for endpoint in spec["endpoints"]:
        for service in selected:
            ports = {p["name"] for p in service["spec"]["ports"]}
            assert endpoint["port"] in ports, (service["metadata"]["name"], endpoint["port"])


# Beyond its CRD's schema: the references a custom resource makes to other objects.
_REFERENCES: dict[tuple[str, str], Any] = {
    ("cert-manager.io/v1", "Issuer"): _check_issuer,
    ("cert-manager.io/v1", "Certificate"): _check_certificate,
    ("postgresql.cnpg.io/v1", "Cluster"): _check_cnpg_cluster,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _check_service_monitor,
}


@pytest.mark.parametrize("variant", ALL_RENDERED)
def test_every_object_validates(variant: str) -> None:
    """Built-in kinds against the Kubernetes schemas, custom resources against their CRDs'
    schemas (vendored in deploy/crds/ with their versions), both strictly."""
    docs = render(variant)
    assert docs, "nothing rendered"
    for doc in docs:
        if crds.crd_for(doc["apiVersion"], doc["kind"]) is not None:
            crds.validate(doc)
            check = _REFERENCES.get((doc["apiVersion"], doc["kind"]))
            if check is not None:
                check(doc, docs)
        else:
            # Raises ValidationError (or SchemaNotFoundError for a kind it does not know).
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# Built-in kinds without a namespace (the ones these manifests could hold).
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}


@pytest.mark.parametrize("variant", ALL_RENDERED)
def test_every_namespaced_object_is_in_the_namespace(variant: str) -> None:
    """Each overlay, each component on the production overlay (composed in a kustomization of
    one's own), and the cluster-wide folder: namespaced objects in `ragmesh`, cluster-scoped
    ones (the trust Bundle) in none. An object without a namespace lands in whatever namespace
    `kubectl apply` runs in, where nothing resolves its name (issue 26: qdrant)."""
    for doc in render(variant):
        scoped = crds.namespaced(doc["apiVersion"], doc["kind"])
        if scoped is None:
            scoped = doc["kind"] not in _CLUSTER_SCOPED
        where = doc["metadata"].get("namespace")
        assert where == ("ragmesh" if scoped else None), (doc["kind"], doc["metadata"]["name"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_secret_a_pod_mounts_or_reads_has_a_maker(variant: str) -> None:
    docs = render(variant)
    made = {c["spec"]["secretName"] for c in find(docs, "Certificate")}
    # CloudNativePG makes <cluster>-app (the application user's URI) and <cluster>-ca.
    made |= {f"{c['metadata']['name']}-{s}" for c in find(docs, "Cluster") for s in ("app", "ca")}
    # trust-manager writes each Bundle's target ConfigMap (named as the Bundle).
    bundles = {b["metadata"]["name"] for b in find(render("cluster"), "Bundle")}
    config_maps = {c["metadata"]["name"] for c in find(docs, "ConfigMap")} | bundles
    for container in containers(docs):
        files = list(container.mounted_files())
        names = {name for _, _, kind, name in files if kind == "secret"}
        for _, _, kind, name in files:
            assert kind == "secret" or name in config_maps, (container.name, name)
        names |= {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container.spec.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        for name in names:
            assert name in made or name in _OUTSIDE_SECRETS, (container.name, name)


def test_certificates_carry_the_names_the_mesh_verifies() -> None:
    docs = render("base")
    by_secret = {c["spec"]["secretName"]: c["spec"] for c in find(docs, "Certificate")}
    for service in SERVICES:
        server = by_secret[f"ragmesh-{service}-tls"]
        assert server["uris"] == [identity_uri("service", service)]
        # Envoy's upstream TLS checks this DNS name (ragmeshd/envoy/config.py).
        assert service_dns_name(service) in server["dnsNames"]
        assert "server auth" in server["usages"]
        client = by_secret[f"ragmesh-{service}-client-tls"]
        assert client["uris"] == [identity_uri("service", service)]
        assert client["usages"] == ["digital signature", "client auth"]
    # The OpenAI adapter as a service (Envoy verifies its server name, Envoy's internal
    # listener admits its client certificate); the rate-limit service serves only.
    for name in ("openai", "ratelimit"):
        server = by_secret[f"ragmesh-{name}-tls"]
        assert server["uris"] == [identity_uri("service", name)]
        assert server["dnsNames"] == [service_dns_name(name)]
        assert server["usages"] == ["digital signature", "server auth"]
    assert by_secret["ragmesh-openai-client-tls"]["uris"] == [identity_uri("service", "openai")]
    assert "ragmesh-ratelimit-client-tls" not in by_secret
    upstream = by_secret["ragmesh-envoy-upstream-tls"]
    assert upstream["uris"] == [identity_uri("envoy", "envoy-upstream")]
    envoy = by_secret["ragmesh-envoy-tls"]
    settings = settings_map(docs)["data"]
    for target in ("RAGMESH_SEARCH__EMBEDDINGS_TARGET", "RAGMESH_COORDINATOR__SEARCH_TARGET"):
        # Services verify Envoy's certificate against the host name they dial.
        assert settings[target].rsplit(":", 1)[0] in envoy["dnsNames"]


def test_probes_ask_the_health_port_for_the_service_names() -> None:
    docs = render("base")
    for container in containers(docs):
        if container.deployment not in SERVICES:
            continue
        service = container.deployment
        env = {e["name"]: e.get("value") for e in container.spec["env"]}
        health_port = int(env["RAGMESH_SERVER__HEALTH_LISTEN"].rsplit(":", 1)[1])
        ports = {p["name"]: p["containerPort"] for p in container.spec["ports"]}
        assert ports["health"] == health_port
        # The port Prometheus scrapes is the one this service's own setting serves /metrics on.
        metrics = env[f"RAGMESH_{service.upper()}__METRICS_LISTEN"]
        assert metrics.startswith("0.0.0.0:") and int(metrics.rsplit(":", 1)[1]) == ports["metrics"]
        readiness_name = grpc_service_name(service)
        for probe, expected in (
            ("startupProbe", readiness_name),
            ("readinessProbe", readiness_name),
            ("livenessProbe", LIVENESS_SERVICE),
        ):
            grpc_probe = container.spec[probe]["grpc"]
            assert (grpc_probe["port"], grpc_probe["service"]) == (health_port, expected)


def test_adapter_and_ratelimit_probes_ask_their_health_ports() -> None:
    """The adapter's plaintext /healthz and /livez, the rate-limit service's grpc.health.v1,
    on the health-only ports their settings open; Envoy reaches them on the ports it renders."""
    docs = render("base")
    settings = settings_map(docs)["data"]
    by_name = {c.deployment: c for c in containers(docs)}
    openai, ratelimit = by_name["openai"], by_name["ratelimit"]
    openai_env = {e["name"]: e.get("value") for e in openai.spec["env"]}
    ports = {p["name"]: p["containerPort"] for p in openai.spec["ports"]}
    assert ports["health"] == int(openai_env["RAGMESH_OPENAI__HEALTH_LISTEN"].rsplit(":", 1)[1])
    assert ports["https"] == int(settings["RAGMESH_OPENAI__LISTEN"].rsplit(":", 1)[1])
    assert openai.spec["readinessProbe"]["httpGet"] == {
        "path": HEALTH_PATH,
        "port": ports["health"],
    }
    assert openai.spec["livenessProbe"]["httpGet"] == {
        "path": LIVENESS_PATH,
        "port": ports["health"],
    }
    assert openai.argv({}) == ["ragmesh", "serve", "openai"]

    ratelimit_env = {e["name"]: e.get("value") for e in ratelimit.spec["env"]}
    ports = {p["name"]: p["containerPort"] for p in ratelimit.spec["ports"]}
    health = int(ratelimit_env["RAGMESH_SERVER__HEALTH_LISTEN"].rsplit(":", 1)[1])
    assert ports["grpc"] == int(settings["RAGMESH_RATELIMIT__LISTEN"].rsplit(":", 1)[1])
    for probe, expected in (
        ("readinessProbe", RATELIMIT_SERVICE),
        ("livenessProbe", LIVENESS_SERVICE),
    ):
        grpc_probe = ratelimit.spec[probe]["grpc"]
        assert (grpc_probe["port"], grpc_probe["service"]) == (health, expected)
    # Its buckets are in the process: one replica, or two limits would each let a key through.
    assert one(docs, "Deployment", "ratelimit")["spec"]["replicas"] == 1
    assert ratelimit.argv({}) == ["ragmesh", "serve", "ratelimit"]
    for name in ("openai", "ratelimit"):
        service = one(docs, "Service", name)
        assert service["spec"]["clusterIP"] == "None", name  # one Envoy host per pod


@pytest.mark.parametrize("variant", ["dev", "production"])
def test_pods_run_as_non_root_on_a_read_only_root_with_limits(variant: str) -> None:
    docs = render(variant)
    for container in containers(docs):
        pod_security = container.pod["spec"]["securityContext"]
        assert pod_security["runAsNonRoot"] is True, container.name
        security = container.spec["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container.name
        assert security["allowPrivilegeEscalation"] is False, container.name
        resources = container.spec["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container.name
        assert "memory" in resources["limits"], container.name


def test_graceful_termination_outlasts_drain_and_grace() -> None:
    docs = render("base")
    settings = settings_map(docs)["data"]
    needed = float(settings["RAGMESH_SERVER__SHUTDOWN_DRAIN_S"]) + float(
        settings["RAGMESH_SERVER__SHUTDOWN_GRACE_S"]
    )
    for service in (*SERVICES, "ratelimit"):
        pod = one(docs, "Deployment", service)["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > needed, service
    # The adapter drains as long, then uvicorn gives open requests SHUTDOWN_GRACE_S.
    pod = one(docs, "Deployment", "openai")["spec"]["template"]["spec"]
    drain = float(settings["RAGMESH_SERVER__SHUTDOWN_DRAIN_S"])
    assert pod["terminationGracePeriodSeconds"] > drain + OPENAI_SHUTDOWN_GRACE_S


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_container_environment_is_valid_settings(variant: str) -> None:
    """Each container's RAGMESH_* environment loads as settings (unknown keys in a section and
    bad values are refused), with placeholder values for the Secrets."""
    docs = render(variant)
    secrets = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"]): (
            "postgresql://ragmesh@db.example/ragmesh"
        )
        for c in containers(docs)
        for e in c.spec.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for container in containers(docs):
        env = container.env(docs, secrets)
        with pytest.MonkeyPatch.context() as patch:
            for key in list(os.environ):
                if key.startswith("RAGMESH_"):
                    patch.delenv(key)
            for key, value in env.items():
                patch.setenv(key, value)
            load_settings()
