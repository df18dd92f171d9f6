"""The rendered NetworkPolicies, evaluated as Kubernetes does: a connection from one pod to a
port of another passes when the target's ingress policies admit it and the source's egress
policies let it out. Every hop goes through Envoy; only the probes' and Prometheus's
plaintext ports are open to all; the database takes search, the coordinator, its own
instances and its operator; ragmesh's pods reach nothing but what they call, and DNS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.deploy.manifests import Doc, find, render

NAMESPACE = "ragmesh"
# Who calls whom, and nothing else: (source, destination, port name or number).
EXPECTED_CALLS: set[tuple[str, str, str | int]] = {
    *(("envoy", service, "grpc") for service in ("embeddings", "search", "coordinator")),
    ("envoy", "ratelimit", "grpc"),
    ("envoy", "llm", "grpc"),
    ("envoy", "openai", "https"),
    ("search", "envoy", "internal"),
    ("coordinator", "envoy", "internal"),
    ("openai", "envoy", "internal"),
    ("search", "qdrant", "http"),
    ("search", "qdrant", "grpc"),
    ("qdrant", "qdrant", "p2p"),
    ("search", "ragmesh-db", 5432),
    ("coordinator", "ragmesh-db", 5432),
    # Replication and status between instances; the operator's status and SQL connections.
    ("ragmesh-db", "ragmesh-db", 5432),
    ("ragmesh-db", "ragmesh-db", 8000),
    ("cnpg-operator", "ragmesh-db", 5432),
    ("cnpg-operator", "ragmesh-db", 8000),
}
# Open to every source (clients; the kubelet and Prometheus).
OPEN_PORTS: set[str | int] = {"client", "health", "metrics", "probe", 9187}


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    ports: set[str | int] = field(default_factory=set)


# Pods these manifests do not declare: a client elsewhere, CloudNativePG's operator (in its
# default namespace) and the instance pods it makes for the Cluster (their ports by number).
OUTSIDE = Pod("elsewhere", {})
OPERATOR = Pod("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"})


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _peer_matches(peer: dict[str, Any], source: Pod) -> bool:
    """A podSelector alone means this namespace; with a namespaceSelector, those namespaces."""
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": source.namespace}
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif source.namespace != NAMESPACE:
        return False
    return _selects(peer.get("podSelector", {}), source.labels)


def _admitted(docs: list[Doc], direction: str, selected: Pod, peer: Pod, port: str | int) -> bool:
    """Whether `selected`'s policies of `direction` (Ingress, Egress) let through a connection
    with `peer` on `port` (a name or a number of the target's)."""
    policies = [
        p
        for p in find(docs, "NetworkPolicy")
        if direction in p["spec"]["policyTypes"]
        and _selects(p["spec"]["podSelector"], selected.labels)
    ]
    if not policies:
        return True  # a pod no policy of this direction selects is not restricted in it
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in policies:
        for rule in policy["spec"].get(key, []):
            ports = [p["port"] for p in rule.get("ports", [])]
            peers = rule.get(peers_key, [])
            if (not ports or port in ports) and (
                not peers or any(_peer_matches(p, peer) for p in peers)
            ):
                return True
    return False


def allowed(docs: list[Doc], source: Pod, target: Pod, port: str | int) -> bool:
    """Whether `source` may connect to `port` (a name or a number) of `target`."""
    return _admitted(docs, "Ingress", target, source, port) and _admitted(
        docs, "Egress", source, target, port
    )


def _pods(docs: list[Doc]) -> dict[str, Pod]:
    """Each workload's pod (labels, its containers' named ports), and the database's."""
    pods = {}
    for kind in ("Deployment", "StatefulSet"):
        for workload in find(docs, kind):
            template = workload["spec"]["template"]
            ports: set[str | int] = {
                port["name"]
                for container in template["spec"]["containers"]
                for port in container.get("ports", [])
            }
            pods[workload["metadata"]["name"]] = Pod(
                NAMESPACE, template["metadata"]["labels"], ports
            )
    for cluster in find(docs, "Cluster"):
        name = cluster["metadata"]["name"]
        pods[name] = Pod(NAMESPACE, {"cnpg.io/cluster": name}, {5432, 8000, 9187})
    return pods


# The cluster's DNS (CoreDNS, kube-dns's labels) and a pod of some other namespace.
DNS = Pod("kube-system", {"k8s-app": "kube-dns"}, {53})
ELSEWHERE = Pod("elsewhere", {"app": "anything"}, {443, 5432, 6333, 8443})


@pytest.mark.parametrize("variant", ["base", "production", "dev+qdrant", "production+qdrant"])
def test_ragmesh_pods_reach_only_what_they_call_and_dns(variant: str) -> None:
    docs = render(variant)
    pods = _pods(docs)
    for name, pod in pods.items():
        if "app.kubernetes.io/part-of" not in pod.labels:
            continue  # the database's and Qdrant's own pods: their operators' traffic
        assert allowed(docs, pod, DNS, 53), f"{name} cannot resolve names"
        for port in ELSEWHERE.ports:
            assert not _admitted(docs, "Egress", pod, ELSEWHERE, port), f"{name} -> :{port}"


@pytest.mark.parametrize(
    "variant",
    ["base", "production", "dev+qdrant", "production+qdrant-distributed", "production+llm-local"],
)
def test_only_what_must_talk_talks(variant: str) -> None:
    docs = render(variant)
    pods = _pods(docs)
    sources = {**pods, "outside": OUTSIDE, "cnpg-operator": OPERATOR}
    for target_name, target in pods.items():
        assert any(
            _selects(p["spec"]["podSelector"], target.labels) for p in find(docs, "NetworkPolicy")
        ), f"no NetworkPolicy protects {target_name}"
        for port in target.ports:
            for source_name, source in sources.items():
                # The open ports serve the kubelet (which no policy governs) and Prometheus,
                # not ragmesh's own pods, whose egress reaches only what they call.
                restricted = "app.kubernetes.io/part-of" in source.labels
                expected = (port in OPEN_PORTS and not restricted) or (
                    source_name,
                    target_name,
                    port,
                ) in EXPECTED_CALLS
                assert allowed(docs, source, target, port) == expected, (
                    f"{source_name} -> {target_name}:{port}"
                )


def test_an_external_database_has_no_policy_for_absent_pods() -> None:
    docs = render("production+external-postgres")
    assert not find(docs, "Cluster")
    assert "database" not in {p["metadata"]["name"] for p in find(docs, "NetworkPolicy")}
