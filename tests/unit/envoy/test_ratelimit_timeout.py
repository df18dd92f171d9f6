"""How long Envoy waits for the rate-limit service is the setting ratelimit.timeout_s (issue
19), rendered into the client listener's rate-limit filter (250 ms unless set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ragmeshd.envoy.config import render_config
from ragmeshd.envoy.security import RATELIMIT_FILTER
from ragmeshd.settings import Settings
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.plan import available_services, plan_replicas
from ragmeshd.supervisor.topology import mesh_topology
from tests.unit.envoy.test_http_gateway import manager


def ratelimit_filter(settings: Settings) -> dict[str, Any]:
    """The client listener's rate-limit filter that `ragmesh up` renders for `settings`."""
    layout = MeshLayout(settings.state_dir)
    replicas = plan_replicas(settings, dict.fromkeys(available_services(), 1))
    config = yaml.safe_load(
        render_config(mesh_topology(settings, replicas, layout.certificates(), layout))
    )
    (found,) = [
        f for f in manager(config, "client")["http_filters"] if f["name"] == RATELIMIT_FILTER
    ]
    return dict(found["typed_config"])


def test_envoy_waits_250_ms_for_a_decision_by_default(tmp_path: Path) -> None:
    rendered = ratelimit_filter(Settings.model_validate({"state_dir": str(tmp_path)}))
    assert rendered["timeout"] == "0.25s"
    assert rendered["failure_mode_deny"] is True


def test_the_wait_is_the_ratelimit_timeout_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGMESH_RATELIMIT__TIMEOUT_S", "5")
    settings = Settings.model_validate({"state_dir": str(tmp_path)})
    assert settings.ratelimit.timeout_s == 5
    assert ratelimit_filter(settings)["timeout"] == "5s"


def test_a_wait_of_zero_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGMESH_RATELIMIT__TIMEOUT_S", "0")
    with pytest.raises(ValueError, match="timeout_s"):
        Settings.model_validate({"state_dir": str(tmp_path)})
