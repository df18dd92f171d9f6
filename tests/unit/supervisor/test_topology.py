"""The Envoy configuration `ragmesh up` renders with every default, committed for readers as
envoy/reference/envoy.yaml, is current (`make generate` writes it again)."""

from __future__ import annotations

import pytest

from ragmeshd.supervisor.topology import reference_config
from tests.helpers import REPO_ROOT


def test_reference_envoy_config_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    committed = (REPO_ROOT / "envoy" / "reference" / "envoy.yaml").read_text()
    assert reference_config() == committed, "run `make generate` to render it again"
