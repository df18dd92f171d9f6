"""envoy/README.md describes every template in envoy/ (it once listed 9 of 15)."""

from __future__ import annotations

from pathlib import Path

ENVOY = Path(__file__).resolve().parents[3] / "envoy"


def test_every_template_is_described() -> None:
    readme = (ENVOY / "README.md").read_text()
    missing = [p.name for p in sorted(ENVOY.glob("*.yaml")) if f"`{p.name}`" not in readme]
    assert missing == []
