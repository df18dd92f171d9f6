"""`ragmesh profile` on the shared mesh: every process of mesh.json measured idle and under
the mixed load, and every kind of call answered (the load goes on until each has answered
once: --min-calls, no timing luck; the figures themselves are printed, never asserted)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import REPO_ROOT, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

FIGURES = {"rss_mean_mib", "rss_max_mib", "cpu_mean_cores", "cpu_p95_cores"}


def test_profile_samples_every_process_idle_and_under_load(mesh: Mesh) -> None:
    result = subprocess.run(
        ragmesh_command(
            "profile", "--duration", "1s", "--concurrency", "1", "--min-calls", "1", "--json"
        ),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert set(document["calls"]) == {"Embed(8 texts)", "Search", "AugmentQuery"}
    assert all(count >= 1 for count in document["calls"].values()), document["calls"]
    for name in mesh.state.pids:
        figures = document["processes"][name]
        assert set(figures["idle"]) == set(figures["loaded"]) == FIGURES, figures
