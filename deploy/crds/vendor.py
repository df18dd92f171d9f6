"""Vendor the OpenAPI schemas of the custom resources deploy/kubernetes uses.

    python deploy/crds/vendor.py <owner/name> <git dir of a clone> <tag> <path of a CRD file> ...

writes, for each CRD, deploy/crds/<group>_<plural>.json: the project, tag and path it came
from, its scope and kind, and each served version's openAPIV3Schema with the descriptions
dropped (they are most of a CRD's size; the docs are upstream). tests/deploy/crds.py validates
every rendered custom resource against them, strictly (unknown fields refused, as `kubectl
apply` does by default).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def _strip(schema: Any) -> Any:
    """A schema node without its documentation (property names are kept, whatever they are)."""
    if isinstance(schema, list):
        return [_strip(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    stripped = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in ("properties", "patternProperties", "definitions"):
            stripped[key] = {name: _strip(node) for name, node in value.items()}
        else:
            stripped[key] = _strip(value)
    return stripped


def vendor(project: str, git_dir: str, tag: str, path: str) -> Path:
    text = subprocess.run(
        ["git", "-C", git_dir, "show", f"{tag}:{path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    crd = yaml.safe_load(text)
    spec = crd["spec"]
    out = {
        "source": {"project": project, "tag": tag, "path": path},
        "group": spec["group"],
        "kind": spec["names"]["kind"],
        "plural": spec["names"]["plural"],
        "scope": spec["scope"],
        "versions": {
            v["name"]: _strip(v["schema"]["openAPIV3Schema"])
            for v in spec["versions"]
            if v["served"]
        },
    }
    target = HERE / f"{spec['group']}_{spec['names']['plural']}.json"
    target.write_text(json.dumps(out, sort_keys=True, separators=(",", ":")) + "\n")
    return target


if __name__ == "__main__":
    project, git_dir, tag, *paths = sys.argv[1:]
    for path in paths:
        print(vendor(project, git_dir, tag, path))
