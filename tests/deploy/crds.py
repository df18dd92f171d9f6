"""Custom resources checked against their CRDs' own schemas, vendored with their versions in
deploy/crds/ (deploy/crds/vendor.py). Validation is strict as `kubectl apply` is by default:
a field the schema does not declare is refused (unless the schema keeps unknown fields). The
CRDs' CEL rules (x-kubernetes-validations) are not evaluated here; the API server does that."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema

from tests.helpers import REPO_ROOT

CRD_DIR = REPO_ROOT / "deploy" / "crds"


@cache
def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(group, kind) -> the vendored CRD."""
    found = {}
    for path in sorted(CRD_DIR.glob("*.json")):
        crd = json.loads(path.read_text())
        found[(crd["group"], crd["kind"])] = crd
    return found


def crd_for(api_version: str, kind: str) -> dict[str, Any] | None:
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return _crds().get((group, kind))


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items() if key != "properties"}
    if "properties" in schema:
        strict["properties"] = {name: _strict(node) for name, node in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            strict["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string"):
        strict["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return strict


@cache
def _validator(group: str, kind: str, version: str) -> jsonschema.Draft7Validator:
    crd = _crds()[(group, kind)]
    schema = _strict(crd["versions"][version])
    # metadata is the API server's (ObjectMeta): its fields are checked by kubernetes-validate
    # for built-in kinds; here only its shape.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def validate(doc: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError unless `doc` fits its CRD's schema; AssertionError
    when its kind or version is not vendored."""
    crd = crd_for(doc["apiVersion"], doc["kind"])
    assert crd is not None, f"no vendored CRD for {doc['apiVersion']} {doc['kind']}"
    version = doc["apiVersion"].rsplit("/", 1)[1]
    assert version in crd["versions"], f"{doc['kind']}: {version} is not served"
    errors = sorted(
        _validator(crd["group"], crd["kind"], version).iter_errors(doc),
        key=lambda e: list(e.path),
    )
    if errors:
        first = errors[0]
        path = "/".join(str(p) for p in first.absolute_path)
        raise jsonschema.ValidationError(
            f"{doc['kind']} {doc['metadata'].get('name')}: {path}: {first.message}"
        )


def namespaced(api_version: str, kind: str) -> bool | None:
    """Whether a custom resource is namespaced, from its CRD; None for other kinds."""
    crd = crd_for(api_version, kind)
    return None if crd is None else crd["scope"] == "Namespaced"
