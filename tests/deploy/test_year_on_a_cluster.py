"""The manifests as a platform engineer runs them for a year (issue 26): autoscalers own their
Deployments' replicas, each pod holds only its own key, a settings change rolls the pods, the
public Service carries the client port only, certificates renew without splitting trust and
alerts watch them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import grpc
import pytest
import yaml

from ragmeshd.runtime import metrics
from tests.deploy.manifests import (
    KUSTOMIZE_ROOT,
    VARIANTS,
    containers,
    find,
    one,
    render,
    render_directory,
    settings_map,
)

# The servers that check callers' keys (keys.json: hashes only), and the services that call
# others with a key of their own.
KEY_CHECKERS = ("embeddings", "search", "coordinator", "ratelimit")
KEY_USERS = {"search": ("service-search.key",), "coordinator": ("service-coordinator.key",)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_replicas_where_an_autoscaler_owns_the_deployment(variant: str) -> None:
    """`kubectl apply -k` would set a Deployment's replicas back on every apply, fighting its
    HorizontalPodAutoscaler (or KEDA's ScaledObject)."""
    docs = render(variant)
    owned = {h["spec"]["scaleTargetRef"]["name"] for h in find(docs, "HorizontalPodAutoscaler")}
    owned |= {s["spec"]["scaleTargetRef"]["name"] for s in find(docs, "ScaledObject")}
    assert "embeddings" in owned
    for name in owned:
        assert "replicas" not in one(docs, "Deployment", name)["spec"], (variant, name)


@pytest.mark.parametrize("variant", ["base", "production"])
def test_each_pod_mounts_only_its_own_key(variant: str) -> None:
    """keys.json (hashes) for every server that checks keys, and the one service key the pod
    presents; never admin.key (owning any pod must not mean owning the mesh)."""
    docs = render(variant)
    for container in containers(docs):
        keys = [
            (path, kind, name)
            for _, path, kind, name in container.mounted_files()
            if name == "ragmesh-api-keys"
        ]
        expected = set()
        if container.deployment in KEY_CHECKERS:
            expected = {"keys.json", *KEY_USERS.get(container.deployment, ())}
        assert {path for path, _, _ in keys} == expected, container.name


def _deployment_settings_names(docs: list[dict]) -> set[str]:
    return {
        source["configMapRef"]["name"]
        for container in containers(docs)
        for source in container.spec.get("envFrom", [])
    }


def test_a_settings_change_rolls_every_pod(tmp_path: Path) -> None:
    """Settings are generated with a hash of their values in the ConfigMap's name, and every
    container refers to that name: a changed value changes every pod template, so every
    Deployment rolls (Envoy's too, whose init container renders its configuration from them)."""
    docs = render("production")
    generated = settings_map(docs)["metadata"]["name"]
    assert _deployment_settings_names(docs) == {generated}
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(KUSTOMIZE_ROOT / "overlays/production", overlay)],
                "configMapGenerator": [
                    {
                        "name": "ragmesh-settings",
                        "behavior": "merge",
                        "literals": ["RAGMESH_LOG_LEVEL=WARNING"],
                    }
                ],
            }
        )
    )
    changed = render_directory(overlay)
    renamed = settings_map(changed)["metadata"]["name"]
    assert renamed != generated
    assert settings_map(changed)["data"]["RAGMESH_LOG_LEVEL"] == "WARNING"
    assert _deployment_settings_names(changed) == {renamed}
    # Every Deployment with a ragmesh container (all of them) sees a new pod template.
    before = {d["metadata"]["name"]: d["spec"]["template"] for d in find(docs, "Deployment")}
    after = {d["metadata"]["name"]: d["spec"]["template"] for d in find(changed, "Deployment")}
    assert before.keys() == after.keys() and all(before[n] != after[n] for n in before)


@pytest.mark.parametrize("variant", ["base", "production"])
def test_the_public_service_carries_the_client_port_only(variant: str) -> None:
    docs = render(variant)
    envoy = one(docs, "Service", "envoy")
    assert [p["port"] for p in envoy["spec"]["ports"]] == [8443]
    internal_port = int(settings_map(docs)["data"]["RAGMESH_MESH__INTERNAL_LISTEN"].split(":")[1])
    for service in find(docs, "Service"):
        ports = {p["port"] for p in service["spec"]["ports"]}
        if internal_port in ports:
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]
    if variant == "production":
        assert envoy["spec"]["type"] == "LoadBalancer"
    # The services dial the internal Service, whose name Envoy's certificate carries.
    internal = one(docs, "Service", "envoy-internal")
    assert [p["port"] for p in internal["spec"]["ports"]] == [internal_port]


def test_the_mesh_ca_renews_with_its_key_and_is_trusted_through_the_bundle() -> None:
    """The CA: renewed a year before its end with the same key (rotationPolicy Never: its
    leaves keep chaining to it), its Secret labelled for the trust bundle; every pod's ca.crt
    is the bundle's, not its own Secret's."""
    docs = render("production")
    (ca,) = [c for c in find(docs, "Certificate") if c["spec"].get("isCA")]
    spec = ca["spec"]
    assert spec["privateKey"]["rotationPolicy"] == "Never"
    assert spec["renewBefore"] == "8760h" and spec["duration"] == "87600h"
    (bundle,) = find(render("cluster"), "Bundle")
    (source,) = bundle["spec"]["sources"]
    selector = source["secret"]["selector"]["matchLabels"]
    assert selector.items() <= spec["secretTemplate"]["labels"].items()
    assert source["secret"]["key"] == "tls.crt"
    namespace = bundle["spec"]["target"]["namespaceSelector"]["matchLabels"]
    assert namespace == {"kubernetes.io/metadata.name": "ragmesh"}
    target_key = bundle["spec"]["target"]["configMap"]["key"]
    for container in containers(docs):
        for mount_path, path, kind, name in container.mounted_files():
            if path == "ca.crt" and mount_path.startswith("/etc/ragmesh/tls/"):
                assert (kind, name) == ("configMap", bundle["metadata"]["name"]), container.name
    for container in containers(docs):
        files = {(m, p) for m, p, _, _ in container.mounted_files()}
        for mount_path, _ in files:
            if mount_path.startswith("/etc/ragmesh/tls/"):
                assert {
                    (mount_path, "tls.crt"),
                    (mount_path, "tls.key"),
                    (mount_path, target_key),
                } <= files


def test_certificates_that_envoy_accepts_from_callers_live_a_day() -> None:
    """Revocation on Kubernetes by short life: a client certificate (the user's, the
    services') lasts 24 h and is renewed 8 h before its end, so one whose Certificate is
    deleted stops working within a day; the services' channels follow each renewal."""
    for certificate in find(render("production"), "Certificate"):
        spec = certificate["spec"]
        is_caller = spec.get("usages") == ["digital signature", "client auth"]
        if is_caller and certificate["metadata"]["name"] != "ragmesh-envoy-upstream":
            assert (spec["duration"], spec["renewBefore"]) == ("24h", "8h"), spec["secretName"]
        if not spec.get("isCA"):
            assert spec["privateKey"]["rotationPolicy"] == "Always", spec["secretName"]


_METRIC = re.compile(r"\b([a-z_]+_(?:total|seconds|timestamp_seconds|status|expiring))\b")


def test_alerts_watch_certificates_restarts_and_errors_with_metrics_that_exist() -> None:
    docs = render("production+monitoring")
    (rule,) = find(docs, "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    exprs = " ".join(alerts.values())
    used = set(_METRIC.findall(exprs))
    assert {
        "certmanager_certificate_renewal_timestamp_seconds",
        "certmanager_certificate_expiration_timestamp_seconds",
        "kube_pod_container_status_restarts_total",
        "grpc_server_handled_total",
    } <= used
    # Envoy's stat, which tests/deploy/test_wheel_smoke.py reads from a running Envoy.
    assert "envoy_server_days_until_first_cert_expiring" in exprs
    # The services' own counter and its status code names, as the servers write them.
    assert metrics.GRPC_HANDLED._name == "grpc_server_handled"
    (codes,) = re.findall(r'grpc_code=~"([^"]+)"', exprs)
    assert set(codes.split("|")) <= {code.name for code in grpc.StatusCode}
    # Nothing of the Prometheus Operator's without the monitoring component.
    for variant in ("base", "production", "dev"):
        kinds = {d["kind"] for d in render(variant)}
        assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}, variant
