"""The rendered NetworkPolicies, evaluated as Kubernetes does for ingress: which pod may open
a connection to which named port of which pod. Every hop goes through Envoy; only the
probes' and Prometheus's plaintext ports are open to all."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import Doc, find, render

# Who calls whom, and nothing else: (source, destination, port name).
EXPECTED_CALLS = {
    *(("envoy", service, "grpc") for service in ("embeddings", "search", "coordinator")),
    ("envoy", "ratelimit", "grpc"),
    ("envoy", "openai", "https"),
    ("search", "envoy", "internal"),
    ("coordinator", "envoy", "internal"),
    ("openai", "envoy", "internal"),
    ("search", "qdrant", "http"),
    ("search", "qdrant", "grpc"),
}
# Open to every source (clients; the kubelet and Prometheus, which are not pods here).
OPEN_PORTS = {"client", "health", "metrics", "probe"}
OUTSIDE: dict[str, str] = {}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def allowed(docs: list[Doc], source: dict[str, str], target: dict[str, str], port: str) -> bool:
    """Whether a pod labelled `source` may connect to `port` of a pod labelled `target`."""
    policies = [
        p
        for p in find(docs, "NetworkPolicy")
        if "Ingress" in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], target)
    ]
    if not policies:
        return True  # a pod no policy selects takes every connection
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            peers = rule.get("from", [])
            if (not ports or port in ports) and (
                not peers or any(_selects(peer["podSelector"], source) for peer in peers)
            ):
                return True
    return False


def _pods(docs: list[Doc]) -> dict[str, tuple[dict[str, str], set[str]]]:
    """Each workload's pod labels and its containers' named ports."""
    pods = {}
    for kind in ("Deployment", "StatefulSet"):
        for workload in find(docs, kind):
            template = workload["spec"]["template"]
            ports = {
                port["name"]
                for container in template["spec"]["containers"]
                for port in container.get("ports", [])
            }
            pods[workload["metadata"]["name"]] = (template["metadata"]["labels"], ports)
    return pods


@pytest.mark.parametrize("variant", ["base", "production", "dev+qdrant"])
def test_only_what_must_talk_talks(variant: str) -> None:
    docs = render(variant)
    pods = _pods(docs)
    for target, (target_labels, ports) in pods.items():
        assert any(
            _selects(p["spec"]["podSelector"], target_labels) for p in find(docs, "NetworkPolicy")
        ), f"no NetworkPolicy protects {target}"
        for port in ports:
            assert allowed(docs, OUTSIDE, target_labels, port) == (port in OPEN_PORTS), (
                f"{target}:{port} from outside the mesh"
            )
            for source, (source_labels, _) in pods.items():
                expected = port in OPEN_PORTS or (source, target, port) in EXPECTED_CALLS
                assert allowed(docs, source_labels, target_labels, port) == expected, (
                    f"{source} -> {target}:{port}"
                )
